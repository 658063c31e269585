//! Weft's own metrics: counters and gauges kept in memory and served in the Prometheus text
//! exposition format at `GET /metrics` on every role.
//!
//! ```text
//!  sampler / limiter / ingest ──Telemetry::add(name, labels, n)──▶ BTreeMap of series
//!  GET /metrics ──Telemetry::render()──▶ "# HELP …\n# TYPE … counter\nweft_…{k=\"v\"} 12\n"
//! ```
//!
//! One [`Telemetry`] per process, shared by `Arc`; series are created on first use, so a
//! label value (a policy name, a metric name) needs no registration. Label values come from
//! configuration or from bounded sets (the metrics limiter only reports metric names it
//! already admits), so the number of series stays small.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use parking_lot::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: Kind,
    series: BTreeMap<Vec<(String, String)>, f64>,
}

/// A process's own metrics.
#[derive(Debug, Default)]
pub struct Telemetry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

impl Telemetry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds `n` to a counter.
    pub fn add(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], n: f64) {
        self.update(name, help, Kind::Counter, labels, |v| *v += n);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], v: f64) {
        self.update(name, help, Kind::Gauge, labels, |x| *x = v);
    }

    fn update(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&str, &str)],
        f: impl FnOnce(&mut f64),
    ) {
        let key: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut families = self.families.lock();
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        f(family.series.entry(key).or_insert(0.0));
    }

    /// The current value of one series (0 when it does not exist yet).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let families = self.families.lock();
        let Some(family) = families.get(name) else {
            return 0.0;
        };
        family
            .series
            .iter()
            .find(|(key, _)| {
                key.len() == labels.len()
                    && key
                        .iter()
                        .zip(labels)
                        .all(|((k, v), (lk, lv))| k == lk && v == lv)
            })
            .map_or(0.0, |(_, v)| *v)
    }

    /// The sum of every series of `name` whose labels include `filter`.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        let families = self.families.lock();
        let Some(family) = families.get(name) else {
            return 0.0;
        };
        family
            .series
            .iter()
            .filter(|(key, _)| {
                filter
                    .iter()
                    .all(|(fk, fv)| key.iter().any(|(k, v)| k == fk && v == fv))
            })
            .map(|(_, v)| *v)
            .sum()
    }

    /// Every series in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let families = self.families.lock();
        let mut out = String::new();
        for (name, family) in families.iter() {
            let kind = match family.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}", family.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in &family.series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {value}");
            }
        }
        out
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics` for a role's HTTP router.
pub fn route(telemetry: Arc<Telemetry>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let telemetry = std::sync::Arc::clone(&telemetry);
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    telemetry.render(),
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges_with_escaped_labels() {
        let t = Telemetry::new();
        t.add("weft_x_total", "Things.", &[("policy", "a\"b")], 2.0);
        t.add("weft_x_total", "Things.", &[("policy", "a\"b")], 3.0);
        t.add("weft_x_total", "Things.", &[("policy", "c")], 1.0);
        t.set("weft_pending", "Pending.", &[], 7.0);
        let text = t.render();
        assert!(text.contains("# TYPE weft_x_total counter\n"), "{text}");
        assert!(
            text.contains("weft_x_total{policy=\"a\\\"b\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("weft_pending 7\n"), "{text}");
        assert_eq!(t.value("weft_x_total", &[("policy", "c")]), 1.0);
        assert_eq!(t.sum("weft_x_total", &[]), 6.0);
        assert_eq!(t.value("weft_missing", &[]), 0.0);
    }
}
