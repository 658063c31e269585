//! Warnings of one request: facts the user must know about an answer that is still an
//! answer — today, collectors of a cluster that did not answer, so their unflushed rows are
//! missing ("partial results, and it says so").
//!
//! ```text
//!  HTTP request ─> layer(): scope a fresh RequestState in a task-local ─────────────┐
//!    handler ─> QueryService::session() ─> providers keep that RequestState         │
//!      scan ─> a collector does not answer ─> add("collector c2 did not answer …")   │
//!            ─> later scans of the request skip c2 (one deadline per request)        │
//!    handler may put them in its body (search: `warnings`, Jaeger v1: `errors`)      │
//!  response <─ header x-weft-warnings: ["…", …] (only when there are warnings) <────┘
//!  SQL (HTTP and Postgres): SqlResult::warnings; Postgres sends each as a NOTICE
//! ```
//!
//! The state lives in a task-local rather than in every function signature because the
//! sessions of one request are made in many places (search, graph, Jaeger, metrics); a
//! session captures it when it is made, so work DataFusion spawns on other tasks still adds
//! to the right request.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use parking_lot::Mutex;
use weft_schemas::Table;
use weft_storage::{FileMeta, Store};

/// Response header carrying the warnings: a JSON array of strings. Bytes outside printable
/// ASCII, and `%`, are percent-encoded, so `JSON.parse(decodeURIComponent(value))` reads it
/// and a person reads it as is.
pub const HEADER: &str = "x-weft-warnings";

/// The warnings and per-request cluster state of one request; clones share it.
#[derive(Debug, Clone, Default)]
pub struct RequestState(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    warnings: Mutex<Vec<String>>,
    /// Collectors that did not answer in this request, with the warning said about them.
    unreachable: Mutex<BTreeMap<String, String>>,
    /// Committed files of the local store this request's scans read (`weft up`): checked
    /// when the request fails, so an unreadable one is quarantined.
    scanned: Mutex<Vec<ScannedFile>>,
    /// A stored file could not be read while serving this request.
    data_unreadable: std::sync::atomic::AtomicBool,
}

/// A committed file a scan read, with the store that holds it.
type ScannedFile = (Arc<Store>, Table, Arc<FileMeta>);

tokio::task_local! {
    static CURRENT: RequestState;
}

impl RequestState {
    /// Adds a warning unless the same text is already there.
    pub fn add(&self, warning: String) {
        let mut warnings = self.0.warnings.lock();
        if !warnings.contains(&warning) {
            warnings.push(warning);
        }
    }

    /// The warnings so far, in the order they first happened.
    pub fn list(&self) -> Vec<String> {
        self.0.warnings.lock().clone()
    }

    /// Remembers that `node` did not answer (and warns about it).
    pub(crate) fn mark_unreachable(&self, node: &str, warning: String) {
        self.add(warning.clone());
        self.0.unreachable.lock().insert(node.to_owned(), warning);
    }

    /// Whether `node` already failed to answer in this request.
    pub(crate) fn is_unreachable(&self, node: &str) -> bool {
        self.0.unreachable.lock().contains_key(node)
    }

    /// Remembers the local files a scan of this request reads.
    pub(crate) fn note_scanned(&self, store: &Arc<Store>, table: Table, files: &[Arc<FileMeta>]) {
        let mut scanned = self.0.scanned.lock();
        for file in files {
            if !scanned
                .iter()
                .any(|(_, t, f)| *t == table && f.path == file.path)
            {
                scanned.push((
                    std::sync::Arc::clone(store),
                    table,
                    std::sync::Arc::clone(file),
                ));
            }
        }
    }

    /// Notes that reading stored data failed in this request (see [`layer`]).
    pub(crate) fn mark_data_unreadable(&self) {
        self.0
            .data_unreadable
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// After a failed request: reads every local file its scans touched (each once per
    /// process) and quarantines those that cannot be read. Returns how many were moved.
    pub(crate) async fn quarantine_unreadable_scanned(&self) -> usize {
        let scanned = std::mem::take(&mut *self.0.scanned.lock());
        if scanned.is_empty() {
            return 0;
        }
        tokio::task::spawn_blocking(move || {
            let mut moved = 0;
            for (store, table, file) in scanned {
                match store.quarantine_unreadable(table, std::slice::from_ref(&file)) {
                    Ok(n) => moved += n,
                    Err(e) => tracing::error!(error = %e, "quarantining a parquet file failed"),
                }
            }
            moved
        })
        .await
        .unwrap_or(0)
    }

    /// The state of the request being served on this task, if one was scoped.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// [`RequestState::current`], or a fresh state nobody reads (calls outside a request).
    pub(crate) fn current_or_detached() -> Self {
        Self::current().unwrap_or_default()
    }
}

/// The warnings of the current request (empty outside one).
pub fn current() -> Vec<String> {
    RequestState::current()
        .map(|state| state.list())
        .unwrap_or_default()
}

/// Runs `work` as (part of) one request and returns its output with the request's warnings.
/// Inside an enclosing request the enclosing state is kept, so its warnings and its list of
/// unreachable collectors are shared (and the list returned includes earlier warnings).
pub async fn collect<F: Future>(work: F) -> (F::Output, Vec<String>) {
    match RequestState::current() {
        Some(state) => {
            let output = work.await;
            (output, state.list())
        }
        None => {
            let state = RequestState::default();
            let output = CURRENT.scope(state.clone(), work).await;
            (output, state.list())
        }
    }
}

/// Axum middleware: scopes a request state around the handler and adds [`HEADER`] to the
/// response when there are warnings.
pub async fn layer(request: Request, next: Next) -> Response {
    let state = RequestState::default();
    let mut response = CURRENT.scope(state.clone(), next.run(request)).await;
    if state
        .0
        .data_unreadable
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        // A committed file may be unreadable: check the files this request read, so the
        // next request answers from the others (SQL retries at once, see `QueryService`).
        let state = state.clone();
        tokio::spawn(async move { state.quarantine_unreadable_scanned().await });
    }
    let warnings = state.list();
    if let Some(value) = header_value(&warnings) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

/// The [`HEADER`] value for `warnings`; `None` when there are none.
pub fn header_value(warnings: &[String]) -> Option<HeaderValue> {
    if warnings.is_empty() {
        return None;
    }
    let json = serde_json::to_string(warnings).unwrap_or_else(|_| "[]".to_owned());
    let mut encoded = String::with_capacity(json.len());
    for byte in json.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    // Only printable ASCII remains: always a valid header value.
    HeaderValue::from_str(&encoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn warnings_are_collected_per_request_and_deduplicated() {
        let (value, warnings) = collect(async {
            let state = RequestState::current().expect("scoped");
            state.add("a".into());
            state.add("a".into());
            // A nested collect shares the request's state.
            let ((), inner) = collect(async {
                RequestState::current_or_detached().mark_unreachable("c2", "b".into())
            })
            .await;
            assert_eq!(inner, ["a", "b"]);
            assert!(state.is_unreachable("c2"));
            7
        })
        .await;
        assert_eq!(value, 7);
        assert_eq!(warnings, ["a", "b"]);
        assert!(current().is_empty(), "nothing outside a request");
    }

    #[test]
    fn the_header_is_readable_json() {
        assert!(header_value(&[]).is_none());
        let value = header_value(&[
            "collector c2 did not answer (timeout after 2s)".to_owned(),
            "100% naïve \"quoted\"".to_owned(),
        ])
        .unwrap();
        let text = value.to_str().unwrap();
        assert!(text.starts_with(r#"["collector c2 did not answer (timeout after 2s)","#));
        assert!(text.contains("100%25 na%C3%AFve"), "{text}");
    }
}
