//! SIGHUP reloads `[sampling]` and `[storage.retention]` without a restart.
//!
//! ```text
//!  SIGHUP ─> ConfigSource::reload() (file, WEFT_* variables, flags: as at start)
//!         ─> validate ─> apply to the role's samplers (and metrics limiter) and, on
//!            collectors, the retention (storage.retention, storage.delete_grace_secs)
//!         ─> weft_config_reloads_total{result="ok"|"error"}; an error keeps the old settings
//! ```
//!
//! Only those are applied; other sections need a restart (listeners, storage location and
//! cluster settings are bound at start), and a reload that changes them says so in the log.

use std::sync::Arc;

use weft_telemetry::Telemetry;

use crate::config::{ConfigSource, WeftConfig};

const RELOADS: &str = "weft_config_reloads_total";
const RELOADS_HELP: &str = "Configuration reloads (SIGHUP), by result.";

/// Applies the reloadable sections (see the module docs) of the configuration read again on
/// every SIGHUP, for as long as the process runs.
pub(crate) fn spawn(
    running: WeftConfig,
    telemetry: Arc<Telemetry>,
    apply: impl Fn(&WeftConfig) -> Result<(), String> + Send + 'static,
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
                .and_then(|new| apply(&new).map(|()| new));
            match result {
                Ok(new) => {
                    let mut others = new.clone();
                    others.sampling = running.sampling.clone();
                    others.storage.retention = running.storage.retention.clone();
                    others.storage.delete_grace_secs = running.storage.delete_grace_secs;
                    if others != running {
                        tracing::warn!(
                            "configuration reloaded: [sampling] and [storage.retention] applied; other changed sections need a restart"
                        );
                    } else {
                        tracing::info!(
                            "configuration reloaded: [sampling] and [storage.retention] applied"
                        );
                    }
                    running.sampling = new.sampling;
                    running.storage.retention = new.storage.retention;
                    running.storage.delete_grace_secs = new.storage.delete_grace_secs;
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
