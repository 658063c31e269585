//! Incidents: damage found in stored data that may have cost acknowledged records — WAL
//! corruption that replay skipped, a Parquet file that could not be read and was moved to
//! quarantine. Kept until an operator acknowledges them.
//!
//! ```text
//!  replay / store ──record(kind, message, details)──▶ <data_dir>/incidents.jsonl (append, fsync)
//!                                                    ▶ in memory
//!  query API: GET  /api/v1/status/incidents            every incident, newest last
//!             POST /api/v1/status/incidents/{id}/ack   stops the warning
//!  every query answer while one is unacknowledged ──▶ x-weft-warnings
//! ```
//!
//! The file is append-only JSON lines (an incident, or `{"ack": id}`), so it survives
//! restarts and a crash can at worst cut its last line, which is skipped on load.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// File name inside the data directory.
pub const INCIDENTS_FILE: &str = "incidents.jsonl";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// WAL bytes that failed their checks and may have held acknowledged records.
    WalCorruption,
    /// A committed Parquet file that could not be read, moved to quarantine.
    ParquetQuarantined,
}

/// One incident as stored and as served over HTTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: u64,
    pub time_unix_ms: u64,
    pub kind: IncidentKind,
    pub message: String,
    /// Kind-specific facts (segment, offset, bytes, missing sequence numbers, file path...).
    #[serde(default)]
    pub details: serde_json::Value,
    #[serde(default)]
    pub acknowledged: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Line {
    Ack { ack: u64 },
    Incident(Incident),
}

#[derive(Serialize)]
struct AckLine {
    ack: u64,
    time_unix_ms: u64,
}

/// The incidents of one data directory.
#[derive(Debug)]
pub struct Incidents {
    path: PathBuf,
    list: Mutex<Vec<Incident>>,
}

impl Incidents {
    /// Loads `<data_dir>/incidents.jsonl` (missing: none yet). Lines that do not parse
    /// (a crash mid-append) are skipped with a warning.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(INCIDENTS_FILE);
        let mut list: Vec<Incident> = Vec::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                if !text.is_empty() && !text.ends_with('\n') {
                    // A crash cut the last line short: end it, so the next one stands alone.
                    OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .and_then(|mut f| f.write_all(b"\n"))
                        .map_err(|e| Error::Storage(format!("write {}: {e}", path.display())))?;
                }
                for (number, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Line>(line) {
                        Ok(Line::Incident(incident)) => list.push(incident),
                        Ok(Line::Ack { ack }) => {
                            if let Some(i) = list.iter_mut().find(|i| i.id == ack) {
                                i.acknowledged = true;
                            }
                        }
                        Err(e) => tracing::warn!(
                            file = %path.display(),
                            line = number + 1,
                            error = %e,
                            "skipping an unreadable incident line"
                        ),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Storage(format!("read {}: {e}", path.display())));
            }
        }
        Ok(Self {
            path,
            list: Mutex::new(list),
        })
    }

    /// Records a new incident durably and returns it.
    pub fn record(
        &self,
        kind: IncidentKind,
        message: String,
        details: serde_json::Value,
    ) -> Result<Incident> {
        let mut list = self.list.lock();
        let incident = Incident {
            id: list.iter().map(|i| i.id).max().unwrap_or(0) + 1,
            time_unix_ms: now_ms(),
            kind,
            message,
            details,
            acknowledged: false,
        };
        self.append(&incident)?;
        list.push(incident.clone());
        Ok(incident)
    }

    /// Marks an incident acknowledged (durably). `false` when there is no such incident.
    pub fn acknowledge(&self, id: u64) -> Result<bool> {
        let mut list = self.list.lock();
        let Some(incident) = list.iter_mut().find(|i| i.id == id) else {
            return Ok(false);
        };
        if !incident.acknowledged {
            self.append(&AckLine {
                ack: id,
                time_unix_ms: now_ms(),
            })?;
            incident.acknowledged = true;
        }
        Ok(true)
    }

    /// Every incident, oldest first.
    pub fn list(&self) -> Vec<Incident> {
        self.list.lock().clone()
    }

    /// Incidents nobody acknowledged yet.
    pub fn unacknowledged(&self) -> Vec<Incident> {
        self.list
            .lock()
            .iter()
            .filter(|i| !i.acknowledged)
            .cloned()
            .collect()
    }

    /// The warning query answers carry for an unacknowledged incident.
    pub fn warning(incident: &Incident) -> String {
        format!(
            "data incident {}: {} (details: GET /api/v1/status/incidents; acknowledge: \
             POST /api/v1/status/incidents/{}/ack)",
            incident.id, incident.message, incident.id
        )
    }

    fn append(&self, line: &impl Serialize) -> Result<()> {
        let err = |e: std::io::Error| Error::Storage(format!("write {}: {e}", self.path.display()));
        let mut text = serde_json::to_string(line)
            .map_err(|e| Error::Storage(format!("encode incident: {e}")))?;
        text.push('\n');
        let created = !self.path.exists();
        let mut file: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(err)?;
        file.write_all(text.as_bytes()).map_err(err)?;
        file.sync_data().map_err(err)?;
        if created && let Some(dir) = self.path.parent() {
            crate::wal::sync_dir(dir).map_err(err)?;
        }
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incidents_survive_a_restart_and_acknowledgement_sticks() {
        let dir = tempfile::tempdir().unwrap();
        let incidents = Incidents::open(dir.path()).unwrap();
        let first = incidents
            .record(
                IncidentKind::WalCorruption,
                "wal damaged".into(),
                serde_json::json!({"offset": 5}),
            )
            .unwrap();
        incidents
            .record(
                IncidentKind::ParquetQuarantined,
                "file".into(),
                serde_json::Value::Null,
            )
            .unwrap();
        assert!(incidents.acknowledge(first.id).unwrap());
        assert!(!incidents.acknowledge(99).unwrap());
        drop(incidents);
        // A crash mid-append leaves half a line.
        let path = dir.path().join(INCIDENTS_FILE);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"id\": 3, \"ki");
        std::fs::write(&path, text).unwrap();
        let incidents = Incidents::open(dir.path()).unwrap();
        let list = incidents.list();
        assert_eq!(list.len(), 2);
        assert!(list[0].acknowledged);
        assert_eq!(list[0].details["offset"], 5);
        assert_eq!(incidents.unacknowledged().len(), 1);
        assert_eq!(incidents.unacknowledged()[0].id, 2);
        let third = incidents
            .record(
                IncidentKind::WalCorruption,
                "again".into(),
                serde_json::Value::Null,
            )
            .unwrap();
        assert_eq!(third.id, 3);
        drop(incidents);
        assert_eq!(Incidents::open(dir.path()).unwrap().list().len(), 3);
    }
}
