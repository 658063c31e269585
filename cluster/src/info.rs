//! A collector node's self-description, served at `GET /internal/v1/info`.
//!
//! ```text
//!  collector process                                   other roles
//!  ┌───────────────────────────────┐
//!  │ NodeInfoHandle (watch inside) │── GET /internal/v1/info ──> static / DNS probers
//!  │  node_id, grpc, http, ready   │      200 + JSON when ready, 503 + same JSON when not
//!  │  set_ready(bool) ─────────────│── subscribe() ──> gossip: `ready` chitchat key
//!  └───────────────────────────────┘
//! ```
//!
//! The collector flips `ready` (false during WAL replay and shutdown); membership turns
//! that into `MemberState::Down` everywhere, so traffic drains before the node stops. The
//! body is the same JSON in both states so a prober learns the node id of a node that is
//! not ready yet (it becomes a ring member, down, rather than staying unknown).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::sync::watch;

use super::NodeInfo;

/// Where a collector serves its [`NodeInfo`] on its internal HTTP port.
pub const INFO_PATH: &str = "/internal/v1/info";

/// A collector's [`NodeInfo`], shared by its HTTP endpoint and gossip. Cheap to clone: a
/// `watch::Sender` is an `Arc` inside, and it lets gossip react to readiness changes.
#[derive(Clone)]
pub struct NodeInfoHandle {
    info: watch::Sender<NodeInfo>,
}

impl NodeInfoHandle {
    pub fn new(info: NodeInfo) -> Self {
        Self {
            info: watch::Sender::new(info),
        }
    }

    /// The current description (a copy).
    pub fn info(&self) -> NodeInfo {
        self.info.borrow().clone()
    }

    pub fn node_id(&self) -> String {
        self.info.borrow().node_id.clone()
    }

    pub fn is_ready(&self) -> bool {
        self.info.borrow().ready
    }

    /// Marks the node ready (taking data) or not; subscribers hear only real changes.
    pub fn set_ready(&self, ready: bool) {
        let changed = self.info.send_if_modified(|info| {
            let changed = info.ready != ready;
            info.ready = ready;
            changed
        });
        if changed {
            tracing::debug!(node_id = %self.node_id(), ready, "node readiness changed");
        }
    }

    /// Changes of the description (readiness), for gossip.
    pub fn subscribe(&self) -> watch::Receiver<NodeInfo> {
        self.info.subscribe()
    }
}

impl std::fmt::Debug for NodeInfoHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("NodeInfoHandle")
            .field(&*self.info.borrow())
            .finish()
    }
}

/// `GET /internal/v1/info` → JSON [`NodeInfo`]: 200 when ready, 503 (same body) when not.
pub fn router(handle: NodeInfoHandle) -> Router {
    Router::new().route(INFO_PATH, get(info)).with_state(handle)
}

async fn info(State(handle): State<NodeInfoHandle>) -> (StatusCode, Json<NodeInfo>) {
    let info = handle.info();
    let status = if info.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(info))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;

    async fn get_info(handle: &NodeInfoHandle) -> (StatusCode, NodeInfo) {
        let response = router(handle.clone())
            .oneshot(Request::get(INFO_PATH).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn info_is_200_when_ready_and_503_with_the_same_body_when_not() {
        let handle = NodeInfoHandle::new(NodeInfo {
            node_id: "c1".into(),
            grpc_addr: "10.0.0.1:4317".into(),
            http_addr: "10.0.0.1:4319".into(),
            ready: true,
        });
        let mut changes = handle.subscribe();

        let (status, info) = get_info(&handle).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(info, handle.info());

        handle.set_ready(false);
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        let (status, info) = get_info(&handle).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(info.node_id, "c1");
        assert!(!info.ready);

        // Setting the same value again is not a change.
        handle.set_ready(false);
        assert!(!changes.has_changed().unwrap());
    }
}
