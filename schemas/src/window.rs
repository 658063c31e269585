//! The times Weft accepts: span start times and metric point times within a window around
//! the receiving server's clock (`[collector.receiver] accept_past_secs` /
//! `accept_future_secs`). Everything else is refused through partial success.
//!
//! Why: rows are stored in one Parquet file per hour partition, so a request whose items are
//! spread over many hours costs a file per hour at every flush and slows every later query
//! (issue 14: 20,000 spans over 20,000 hours left 20,000 files). The window bounds the hours
//! one request can touch to `(past + future) / 1h + 2`.
//!
//! The filter runs before the write-ahead log and rewrites the request, so the log holds
//! only accepted items: replay (at any later time) gives back exactly what was acknowledged.
//! Collectors behind `weft ingest` do not filter again (the ingest node already did, and a
//! spooled batch may arrive hours later).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;

use crate::prometheus::WriteRequest;

/// How far from now accepted times may lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    pub past: Duration,
    pub future: Duration,
}

/// A [`TimeWindow`] placed at one instant: accepted times are `min_ns..=max_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowBounds {
    pub min_ns: u64,
    pub max_ns: u64,
    window: TimeWindow,
}

/// Items a window filter removed, with the partial-success message naming the window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowRejected {
    pub count: u64,
    pub message: Option<String>,
}

impl TimeWindow {
    /// The accepted range around `now`.
    pub fn at(&self, now: SystemTime) -> WindowBounds {
        let now_ns = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        WindowBounds {
            min_ns: now_ns.saturating_sub(nanos(self.past)),
            max_ns: now_ns.saturating_add(nanos(self.future)),
            window: *self,
        }
    }

    /// The accepted range around the current time.
    pub fn now(&self) -> WindowBounds {
        self.at(SystemTime::now())
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl WindowBounds {
    pub fn contains(&self, time_unix_nano: u64) -> bool {
        (self.min_ns..=self.max_ns).contains(&time_unix_nano)
    }

    fn rejected(&self, count: u64, what: &str, plural: &str) -> WindowRejected {
        if count == 0 {
            return WindowRejected::default();
        }
        let noun = if count == 1 { what } else { plural };
        WindowRejected {
            count,
            message: Some(format!(
                "{count} {noun} rejected: time outside the accepted window of {}s before to \
                 {}s after the server's clock ([collector.receiver] accept_past_secs / \
                 accept_future_secs)",
                self.window.past.as_secs(),
                self.window.future.as_secs()
            )),
        }
    }

    /// Removes spans whose start time is outside the window (and scopes and resources
    /// left empty).
    pub fn retain_spans(&self, request: &mut ExportTraceServiceRequest) -> WindowRejected {
        let mut removed = 0u64;
        for resource in &mut request.resource_spans {
            for scope in &mut resource.scope_spans {
                let before = scope.spans.len();
                scope
                    .spans
                    .retain(|span| self.contains(span.start_time_unix_nano));
                removed += (before - scope.spans.len()) as u64;
            }
            if removed > 0 {
                resource.scope_spans.retain(|s| !s.spans.is_empty());
            }
        }
        if removed > 0 {
            request.resource_spans.retain(|r| !r.scope_spans.is_empty());
        }
        self.rejected(removed, "span", "spans")
    }

    /// Removes metric data points whose time is outside the window (and metrics, scopes and
    /// resources left without points).
    pub fn retain_metric_points(
        &self,
        request: &mut ExportMetricsServiceRequest,
    ) -> WindowRejected {
        let mut removed = 0u64;
        for resource in &mut request.resource_metrics {
            for scope in &mut resource.scope_metrics {
                for metric in &mut scope.metrics {
                    let before = point_count(metric.data.as_ref());
                    let keep = |t: u64| self.contains(t);
                    match &mut metric.data {
                        Some(Data::Gauge(g)) => g.data_points.retain(|p| keep(p.time_unix_nano)),
                        Some(Data::Sum(s)) => s.data_points.retain(|p| keep(p.time_unix_nano)),
                        Some(Data::Histogram(h)) => {
                            h.data_points.retain(|p| keep(p.time_unix_nano))
                        }
                        Some(Data::ExponentialHistogram(h)) => {
                            h.data_points.retain(|p| keep(p.time_unix_nano))
                        }
                        Some(Data::Summary(s)) => s.data_points.retain(|p| keep(p.time_unix_nano)),
                        None => {}
                    }
                    let after = point_count(metric.data.as_ref());
                    if after < before {
                        removed += (before - after) as u64;
                        if after == 0 {
                            metric.data = None;
                        }
                    }
                }
                if removed > 0 {
                    scope.metrics.retain(|m| m.data.is_some());
                }
            }
            if removed > 0 {
                resource.scope_metrics.retain(|s| !s.metrics.is_empty());
            }
        }
        if removed > 0 {
            request
                .resource_metrics
                .retain(|r| !r.scope_metrics.is_empty());
        }
        self.rejected(removed, "data point", "data points")
    }

    /// Removes Prometheus samples (and exemplars) whose timestamp is outside the window, and
    /// series left without samples, exemplars or histograms.
    pub fn retain_remote_write(&self, request: &mut WriteRequest) -> WindowRejected {
        let keep = |ms: i64| {
            u64::try_from(ms)
                .ok()
                .and_then(|ms| ms.checked_mul(1_000_000))
                // Times that cannot be nanoseconds are rejected later with their own reason.
                .is_none_or(|ns| self.contains(ns))
        };
        let mut removed = 0u64;
        for series in &mut request.timeseries {
            let before = series.samples.len();
            series.samples.retain(|s| keep(s.timestamp));
            removed += (before - series.samples.len()) as u64;
            series.exemplars.retain(|e| keep(e.timestamp));
        }
        if removed > 0 {
            request.timeseries.retain(|s| {
                !(s.samples.is_empty() && s.exemplars.is_empty() && s.histograms.is_empty())
            });
        }
        self.rejected(removed, "sample", "samples")
    }
}

fn point_count(data: Option<&Data>) -> usize {
    match data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// Adds a window rejection to a conversion's partial-success figures: counts add up and
/// the first reason is kept, the other appended.
pub fn merge_rejections(rejected: &mut u64, message: &mut Option<String>, window: WindowRejected) {
    if window.count == 0 {
        return;
    }
    *rejected += window.count;
    *message = match (message.take(), window.message) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    };
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;

    const HOUR_NS: u64 = 3_600_000_000_000;

    fn window() -> (TimeWindow, WindowBounds, u64) {
        let window = TimeWindow {
            past: Duration::from_secs(7 * 24 * 3600),
            future: Duration::from_secs(3600),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let now_ns = 1_800_000_000 * 1_000_000_000;
        (window, window.at(now), now_ns)
    }

    #[test]
    fn spans_outside_the_window_are_removed_and_the_message_names_it() {
        let (_, bounds, now) = window();
        let times = [
            now,
            now - 7 * 24 * HOUR_NS,
            now - 7 * 24 * HOUR_NS - 1,
            now + HOUR_NS,
            now + HOUR_NS + 1,
            0,
        ];
        let mut request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![
                    ScopeSpans {
                        spans: times
                            .iter()
                            .map(|t| Span {
                                start_time_unix_nano: *t,
                                ..Span::default()
                            })
                            .collect(),
                        ..ScopeSpans::default()
                    },
                    ScopeSpans {
                        spans: vec![Span::default()],
                        ..ScopeSpans::default()
                    },
                ],
                ..ResourceSpans::default()
            }],
        };
        let rejected = bounds.retain_spans(&mut request);
        assert_eq!(rejected.count, 4);
        let message = rejected.message.unwrap();
        assert!(
            message.contains("604800s before to 3600s after"),
            "{message}"
        );
        assert!(message.contains("accept_past_secs"), "{message}");
        let kept: Vec<u64> = request.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.start_time_unix_nano)
            .collect();
        assert_eq!(kept, [now, now - 7 * 24 * HOUR_NS, now + HOUR_NS]);
        assert_eq!(
            request.resource_spans[0].scope_spans.len(),
            1,
            "empty scope gone"
        );
    }

    #[test]
    fn metric_points_and_samples_outside_the_window_are_removed() {
        let (_, bounds, now) = window();
        let point = |t: u64| NumberDataPoint {
            time_unix_nano: t,
            ..NumberDataPoint::default()
        };
        let mut request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        Metric {
                            name: "a".into(),
                            data: Some(Data::Gauge(Gauge {
                                data_points: vec![point(now), point(1)],
                            })),
                            ..Metric::default()
                        },
                        Metric {
                            name: "old".into(),
                            data: Some(Data::Gauge(Gauge {
                                data_points: vec![point(5)],
                            })),
                            ..Metric::default()
                        },
                    ],
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        };
        assert_eq!(bounds.retain_metric_points(&mut request).count, 2);
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(metrics.len(), 1);
        assert_eq!(metrics[0].name, "a");

        let now_ms = (now / 1_000_000) as i64;
        let mut write = WriteRequest {
            timeseries: vec![crate::prometheus::TimeSeries {
                samples: vec![
                    crate::prometheus::Sample {
                        value: 1.0,
                        timestamp: now_ms,
                    },
                    crate::prometheus::Sample {
                        value: 1.0,
                        timestamp: 1_000,
                    },
                ],
                ..Default::default()
            }],
            metadata: Vec::new(),
        };
        let rejected = bounds.retain_remote_write(&mut write);
        assert_eq!(rejected.count, 1);
        assert_eq!(write.timeseries[0].samples.len(), 1);
    }
}
