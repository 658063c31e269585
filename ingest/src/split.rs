//! Splitting an export into one sub-request per set of collector nodes.
//!
//! ```text
//!  ExportTraceServiceRequest
//!   └ ResourceSpans ─ ScopeSpans ─ Span ── validate ─┬─ bad ──> rejected (partial success)
//!                                                    └─ ok ──> ClusterView::targets(trace_id)
//!                                                               │ (cached per trace ID)
//!        one sub-request per distinct target set <──────────────┘
//!        (resource and scope wrappers copied, spans moved), encoded once
//!
//!  metrics / remote-write: no trace ID ─> the whole request to targets(xxhash64(bytes))
//! ```
//!
//! Validation mirrors `weft_schemas::spans` exactly (same rules, same messages, same
//! partial-success text), so a client gets the same answer from an ingest node as from a
//! collector, and collectors never receive a span they would reject. A test compares the
//! two on every rule.
//!
//! When nobody in a target set is up the span is routed to its natural owners
//! (`ring.owners`) as a hint: the caller spools it for them instead of sending.

use std::collections::HashMap;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message as _;
use weft_schemas::spans::{MAX_REPEATED_ENTRIES, TOO_MANY_REPEATED, validate_span};

use weft_cluster::ClusterView;
use weft_cluster::ring::trace_position;

/// Where one part of a request goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Route {
    /// Send to each of these nodes (the first R up members of the preference list).
    Send(Vec<String>),
    /// Nobody that owns it is up: spool it for each of these owners.
    Spool(Vec<String>),
}

/// Targets for `key` in `view`, or `None` when the ring has no members at all.
pub(crate) fn route(view: &ClusterView, key: &[u8]) -> Option<Route> {
    let targets = view.targets(key);
    if !targets.is_empty() {
        return Some(Route::Send(
            targets.into_iter().map(|m| m.node_id.clone()).collect(),
        ));
    }
    let owners = view.ring.owners(key);
    (!owners.is_empty()).then(|| Route::Spool(owners.into_iter().map(str::to_owned).collect()))
}

/// The routing key of a request without trace IDs (metrics, remote-write): a hash of its
/// bytes, so the same request always goes to the same nodes.
pub(crate) fn content_key(payload: &[u8]) -> [u8; 8] {
    trace_position(payload).to_be_bytes()
}

/// A trace export split by target set.
#[derive(Debug, Default)]
pub(crate) struct TraceSplit {
    /// One encoded `ExportTraceServiceRequest` per distinct route.
    pub parts: Vec<(Route, Bytes)>,
    pub accepted: u64,
    pub rejected: u64,
    pub rejection_message: Option<String>,
}

/// Rejected spans counted by reason, in first-seen order (as the collector words it).
#[derive(Debug, Default)]
struct Rejections(Vec<(&'static str, u64)>);

impl Rejections {
    fn add(&mut self, reason: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        match self.0.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += n,
            None => self.0.push((reason, n)),
        }
    }

    fn total(&self) -> u64 {
        self.0.iter().map(|(_, c)| c).sum()
    }

    fn message(&self) -> Option<String> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let unit = if total == 1 { "span" } else { "spans" };
        let detail = match self.0.as_slice() {
            [(reason, _)] => (*reason).to_owned(),
            many => many
                .iter()
                .map(|(r, c)| format!("{r} [{c}]"))
                .collect::<Vec<_>>()
                .join("; "),
        };
        Some(format!("{total} {unit} rejected: {detail}"))
    }
}

/// The sub-request being built for one route.
struct Group {
    route: Route,
    request: ExportTraceServiceRequest,
    /// (resource index, scope index) the last span was added under, so wrappers are
    /// copied once per group and not once per span.
    last_resource: Option<usize>,
    last_scope: Option<(usize, usize)>,
}

/// Validates `request` and splits it by `view`. `original` is the request's protobuf
/// encoding when the client sent protobuf: if everything goes one way unchanged it is
/// forwarded as is (no re-encoding). `Err(())` when the ring has no members.
pub(crate) fn split_traces(
    request: ExportTraceServiceRequest,
    view: &ClusterView,
    original: Option<&Bytes>,
) -> Result<TraceSplit, ()> {
    let mut rejections = Rejections::default();

    // The collector rejects a request whole when repeating its resource and scope
    // attributes on every row would explode; so does the ingest, with the same words.
    let mut repeated = 0usize;
    let mut spans = 0usize;
    for rs in &request.resource_spans {
        let res = rs.resource.as_ref().map_or(0, |r| r.attributes.len());
        for ss in &rs.scope_spans {
            let scope = ss.scope.as_ref().map_or(0, |s| s.attributes.len());
            let n = ss.spans.len();
            spans = spans.saturating_add(n);
            repeated = repeated
                .saturating_add(res.saturating_mul(n))
                .saturating_add(scope.saturating_mul(n));
        }
    }
    if repeated > MAX_REPEATED_ENTRIES {
        rejections.add(TOO_MANY_REPEATED, spans as u64);
        return Ok(TraceSplit {
            parts: Vec::new(),
            accepted: 0,
            rejected: rejections.total(),
            rejection_message: rejections.message(),
        });
    }

    let mut groups: Vec<Group> = Vec::new();
    let mut by_route: HashMap<Route, usize> = HashMap::new();
    let mut by_trace: HashMap<[u8; 16], usize> = HashMap::new();
    let mut accepted = 0u64;

    for (ri, rs) in request.resource_spans.into_iter().enumerate() {
        let ResourceSpans {
            resource,
            scope_spans,
            schema_url: resource_schema_url,
        } = rs;
        for (si, ss) in scope_spans.into_iter().enumerate() {
            let ScopeSpans {
                scope,
                spans,
                schema_url: scope_schema_url,
            } = ss;
            for span in spans {
                if let Err(reason) = validate_span(&span) {
                    rejections.add(reason, 1);
                    continue;
                }
                let trace_id: [u8; 16] = span.trace_id.as_slice().try_into().unwrap_or_default();
                let index = match by_trace.get(&trace_id) {
                    Some(i) => *i,
                    None => {
                        let route = route(view, &trace_id).ok_or(())?;
                        let i = *by_route.entry(route.clone()).or_insert_with(|| {
                            groups.push(Group {
                                route,
                                request: ExportTraceServiceRequest::default(),
                                last_resource: None,
                                last_scope: None,
                            });
                            groups.len() - 1
                        });
                        by_trace.insert(trace_id, i);
                        i
                    }
                };
                let group = &mut groups[index];
                if group.last_resource != Some(ri) {
                    group.last_resource = Some(ri);
                    group.request.resource_spans.push(ResourceSpans {
                        resource: resource.clone(),
                        scope_spans: Vec::new(),
                        schema_url: resource_schema_url.clone(),
                    });
                }
                let resource_spans = group
                    .request
                    .resource_spans
                    .last_mut()
                    .expect("pushed above");
                if group.last_scope != Some((ri, si)) {
                    group.last_scope = Some((ri, si));
                    resource_spans.scope_spans.push(ScopeSpans {
                        scope: scope.clone(),
                        spans: Vec::new(),
                        schema_url: scope_schema_url.clone(),
                    });
                }
                resource_spans
                    .scope_spans
                    .last_mut()
                    .expect("pushed above")
                    .spans
                    .push(span);
                accepted += 1;
            }
        }
    }

    let untouched = groups.len() == 1 && rejections.total() == 0;
    let parts = groups
        .into_iter()
        .map(|g| {
            let bytes = match original {
                Some(bytes) if untouched => bytes.clone(),
                _ => Bytes::from(g.request.encode_to_vec()),
            };
            (g.route, bytes)
        })
        .collect();
    Ok(TraceSplit {
        parts,
        accepted,
        rejected: rejections.total(),
        rejection_message: rejections.message(),
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};

    use super::*;
    use weft_cluster::{Member, MemberState};

    fn view(states: &[(&str, MemberState)]) -> ClusterView {
        let members = states
            .iter()
            .map(|(id, state)| Member {
                node_id: (*id).to_owned(),
                grpc_addr: format!("{id}:1"),
                http_addr: format!("{id}:2"),
                state: *state,
            })
            .collect();
        ClusterView::new(members, 64, 2, 1)
    }

    fn span(trace: u8, id: u8) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: format!("s{trace}-{id}"),
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_000_001_000,
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        let kv = |k: &str| KeyValue {
            key: k.to_owned(),
            value: Some(AnyValue {
                value: Some(
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                        "v".into(),
                    ),
                ),
            }),
            key_strindex: 0,
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: "scope-url".into(),
                }],
                schema_url: "res-url".into(),
            }],
        }
    }

    #[test]
    fn every_span_goes_to_its_targets_with_its_wrappers() {
        let v = view(&[
            ("a", MemberState::Up),
            ("b", MemberState::Up),
            ("c", MemberState::Up),
        ]);
        let spans: Vec<Span> = (1..=40u8).flat_map(|t| [span(t, 1), span(t, 2)]).collect();
        let split = split_traces(request(spans), &v, None).unwrap();
        assert_eq!((split.accepted, split.rejected), (80, 0));
        let mut seen = 0;
        for (route, bytes) in &split.parts {
            let Route::Send(nodes) = route else {
                panic!("all up: {route:?}")
            };
            let req = ExportTraceServiceRequest::decode(bytes.clone()).unwrap();
            for rs in &req.resource_spans {
                assert_eq!(rs.schema_url, "res-url");
                assert!(rs.resource.is_some());
                for ss in &rs.scope_spans {
                    assert_eq!(ss.scope.as_ref().unwrap().name, "lib");
                    assert_eq!(ss.schema_url, "scope-url");
                    for s in &ss.spans {
                        let targets: Vec<&str> = v
                            .targets(&s.trace_id)
                            .iter()
                            .map(|m| m.node_id.as_str())
                            .collect();
                        assert_eq!(&targets, nodes);
                        seen += 1;
                    }
                }
            }
        }
        assert_eq!(seen, 80);
        assert!(
            split.parts.len() > 1,
            "40 traces over 3 nodes use several sets"
        );
    }

    #[test]
    fn single_route_protobuf_is_forwarded_unchanged() {
        let v = view(&[("a", MemberState::Up), ("b", MemberState::Up)]);
        let req = request(vec![span(1, 1), span(2, 1)]);
        let original = Bytes::from(req.encode_to_vec());
        let split = split_traces(req, &v, Some(&original)).unwrap();
        assert_eq!(split.parts.len(), 1, "R=2 of 2 nodes: one route");
        assert_eq!(split.parts[0].1, original);
    }

    #[test]
    fn nobody_up_routes_to_owners_as_hints() {
        let v = view(&[("a", MemberState::Down), ("b", MemberState::Down)]);
        let split = split_traces(request(vec![span(3, 1)]), &v, None).unwrap();
        let owners: Vec<String> = v
            .ring
            .owners(&[3; 16])
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(split.parts[0].0, Route::Spool(owners));
        let empty = ClusterView::empty(64, 2);
        assert!(split_traces(request(vec![span(3, 1)]), &empty, None).is_err());
    }

    /// The ingest answers exactly what the collector would for every validation rule.
    #[test]
    fn validation_matches_the_collector() {
        let v = view(&[("a", MemberState::Up)]);
        let mut bad_parent = span(9, 1);
        bad_parent.parent_span_id = vec![1; 3];
        let mut bad_time = span(9, 2);
        bad_time.end_time_unix_nano = u64::MAX;
        let mut bad_event = span(9, 3);
        bad_event.events = vec![Event {
            time_unix_nano: u64::MAX,
            ..Default::default()
        }];
        let mut bad_link = span(9, 4);
        bad_link.links = vec![Link {
            trace_id: vec![0; 16],
            span_id: vec![1; 8],
            ..Default::default()
        }];
        let mut zero_parent = span(9, 5);
        zero_parent.parent_span_id = vec![0; 8];
        let cases = vec![
            vec![span(0, 1)],
            vec![span(1, 0), span(1, 1)],
            vec![bad_parent, bad_time, bad_event, bad_link, zero_parent],
            vec![span(0, 0), span(5, 5), span(0, 1)],
            vec![span(7, 7)],
            vec![],
        ];
        for spans in cases {
            let req = request(spans);
            let expected = weft_schemas::spans::from_otlp(&req);
            let split = split_traces(req, &v, None).unwrap();
            assert_eq!(split.accepted, expected.batch.num_rows() as u64);
            assert_eq!(split.rejected, expected.rejected);
            assert_eq!(split.rejection_message, expected.rejection_message);
        }
        // The whole-request bound on repeated attributes.
        let mut req = request((0..=255u8).map(|i| span(i.max(1), i.max(1))).collect());
        let kv = req.resource_spans[0].resource.as_ref().unwrap().attributes[0].clone();
        req.resource_spans[0].resource.as_mut().unwrap().attributes = vec![kv; 40_000];
        let expected = weft_schemas::spans::from_otlp(&req);
        let split = split_traces(req, &v, None).unwrap();
        assert_eq!(split.rejected, expected.rejected);
        assert_eq!(split.rejection_message, expected.rejection_message);
        assert!(split.parts.is_empty());
    }
}
