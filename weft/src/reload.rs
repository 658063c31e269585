//! SIGHUP reloads `[sampling]` without a restart.
//!
//! ```text
//!  SIGHUP ─> ConfigSource::reload() (file, WEFT_* variables, flags: as at start)
//!         ─> validate ─> apply to the role's samplers (and metrics limiter)
//!         ─> weft_config_reloads_total{result="ok"|"error"}; an error keeps the old settings
//! ```
//!
//! Only `[sampling]` is applied; other sections need a restart (listeners, storage and
//! cluster settings are bound at start), and a reload that changes them says so in the log.

use std::sync::Arc;

use weft_sampling::SamplingConfig;
use weft_telemetry::Telemetry;

use crate::config::{ConfigSource, WeftConfig};

const RELOADS: &str = "weft_config_reloads_total";
const RELOADS_HELP: &str = "Configuration reloads (SIGHUP), by result.";

/// Applies `[sampling]` on every SIGHUP, for as long as the process runs.
pub(crate) fn spawn(
    running: WeftConfig,
    telemetry: Arc<Telemetry>,
    apply: impl Fn(&SamplingConfig) -> Result<(), String> + Send + 'static,
) {
    tokio::spawn(async move {
        let mut hangups =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "no SIGHUP handler: configuration reload is off");
                    return;
                }
            };
        let mut running = running;
        while hangups.recv().await.is_some() {
            let result = ConfigSource::reload()
                .map_err(|e| format!("{e:#}"))
                .and_then(|new| apply(&new.sampling).map(|()| new));
            match result {
                Ok(new) => {
                    let mut others = new.clone();
                    others.sampling = running.sampling.clone();
                    if others != running {
                        tracing::warn!(
                            "configuration reloaded: [sampling] applied; other changed sections need a restart"
                        );
                    } else {
                        tracing::info!("configuration reloaded: [sampling] applied");
                    }
                    running.sampling = new.sampling;
                    telemetry.add(RELOADS, RELOADS_HELP, &[("result", "ok")], 1.0);
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration reload refused; keeping the running settings");
                    telemetry.add(RELOADS, RELOADS_HELP, &[("result", "error")], 1.0);
                }
            }
        }
    });
}
