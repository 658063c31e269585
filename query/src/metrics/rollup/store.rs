//! Rollup files: names, listing, the fingerprint in their footer, atomic writes.
//!
//! ```text
//!  <root>/rollups/v1/<1m|1h>/<YYYY-MM-DD>/<HH>-<fingerprint>.parquet   an hour (UTC)
//!  <root>/rollups/v1/<1m|1h>/<YYYY-MM-DD>/.<HH>-<fingerprint>.parquet.<pid>.<n>.tmp
//! ```
//!
//! The directory is the catalog: a file exists only once complete (written to a temporary
//! name, fsynced, renamed, directory fsynced). Its name carries the fingerprint of the raw
//! inputs it was computed from, so the same inputs always give the same name (nodes racing
//! on an hour rename identical files over each other) and a file never changes once
//! readers may have seen it. When an hour's inputs change, the new version is written
//! beside the old; readers take the newest (modification time, then name) and the old one
//! is deleted once the new one is older than a grace period longer than any query.
//! `v1` is the rollup layout's version: a new layout goes to a new directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arrow::array::RecordBatch;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use tokio::io::AsyncWriteExt;

use super::{HOUR_NS, Resolution, fold};
use crate::{Error, Result};

/// Rollup layout version (the directory under `rollups/`).
pub(crate) const LAYOUT: &str = "v1";
/// Footer key: the fingerprint of the raw inputs the file was computed from.
pub(crate) const FINGERPRINT_KEY: &str = "weft.rollup.fingerprint";
const RESOLUTION_KEY: &str = "weft.rollup.resolution";
/// Rows per row group of a rollup file.
const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Temporaries older than this are leftovers of a crash or an aborted pass.
const STALE_TMP: Duration = Duration::from_secs(3_600);

/// One rollup file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupFile {
    /// Hours since 1970 (UTC).
    pub hour: i64,
    pub path: PathBuf,
    pub bytes: u64,
    pub modified: SystemTime,
    /// Of the raw inputs it was computed from.
    pub fingerprint: String,
}

/// The rollup directory of one storage root.
#[derive(Debug, Clone)]
pub(crate) struct RollupFiles {
    root: PathBuf,
}

/// `2026-11-24T13`, for logs.
pub(crate) fn hour_label(hour: i64) -> String {
    let (day, hh) = day_and_hour(hour);
    format!("{day}T{hh:02}")
}

/// (`YYYY-MM-DD`, hour of day) of an hour since 1970.
fn day_and_hour(hour: i64) -> (String, i64) {
    let days = hour.div_euclid(24);
    let day = chrono::DateTime::from_timestamp(days.saturating_mul(86_400), 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("day{days}"));
    (day, hour.rem_euclid(24))
}

/// Days since 1970 of a `YYYY-MM-DD` directory name.
fn parse_day(name: &str) -> Option<i64> {
    let date = chrono::NaiveDate::parse_from_str(name, "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    Some((date - epoch).num_days())
}

/// Hour of day and fingerprint of a `HH-<fingerprint>.parquet` file name.
fn parse_hour_file(name: &str) -> Option<(i64, &str)> {
    let (hh, fingerprint) = name.strip_suffix(".parquet")?.split_once('-')?;
    if hh.len() != 2 || !hh.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if fingerprint.is_empty() || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let hh: i64 = hh.parse().ok()?;
    (hh < 24).then_some((hh, fingerprint))
}

impl RollupFiles {
    /// Rollups of the storage root `root` (a data directory or a cluster's shared root).
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.join("rollups").join(LAYOUT),
        }
    }

    fn dir(&self, resolution: Resolution) -> PathBuf {
        self.root.join(resolution.name())
    }

    /// The file of `hour` at `resolution` computed from inputs with `fingerprint`.
    pub(crate) fn path(&self, resolution: Resolution, hour: i64, fingerprint: &str) -> PathBuf {
        let (day, hh) = day_and_hour(hour);
        self.dir(resolution)
            .join(day)
            .join(format!("{hh:02}-{fingerprint}.parquet"))
    }

    /// The current file (newest version) of each hour in `[from, to]` (all when `None`),
    /// by hour. Blocking.
    pub(crate) fn list(
        &self,
        resolution: Resolution,
        hours: Option<(i64, i64)>,
    ) -> Vec<RollupFile> {
        self.versions(resolution, hours)
            .into_values()
            .filter_map(|versions| versions.into_iter().next())
            .collect()
    }

    /// Every version of each hour in `[from, to]`, the current one first. Blocking.
    fn versions(
        &self,
        resolution: Resolution,
        hours: Option<(i64, i64)>,
    ) -> BTreeMap<i64, Vec<RollupFile>> {
        let (from, to) = hours.unwrap_or((i64::MIN, i64::MAX));
        let mut out: BTreeMap<i64, Vec<RollupFile>> = BTreeMap::new();
        if from > to {
            return out;
        }
        let Ok(days) = std::fs::read_dir(self.dir(resolution)) else {
            return out;
        };
        for day in days.flatten() {
            let Some(day_index) = day.file_name().to_str().and_then(parse_day) else {
                continue;
            };
            let first = day_index.saturating_mul(24);
            if first.saturating_add(23) < from || first > to {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(day.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some((hh, fingerprint)) = name.to_str().and_then(parse_hour_file) else {
                    continue;
                };
                let hour = first + hh;
                if hour < from || hour > to {
                    continue;
                }
                let Ok(metadata) = entry.metadata() else {
                    continue;
                };
                out.entry(hour).or_default().push(RollupFile {
                    hour,
                    path: entry.path(),
                    bytes: metadata.len(),
                    modified: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    fingerprint: fingerprint.to_owned(),
                });
            }
        }
        // The current version first: newest, then the larger name.
        for versions in out.values_mut() {
            versions.sort_by(|a, b| (&b.modified, &b.path).cmp(&(&a.modified, &a.path)));
        }
        out
    }

    /// Deletes every file of `resolution` whose whole hour is older than `now - keep`.
    /// Blocking. Returns how many files went.
    pub(crate) fn drop_expired(
        &self,
        resolution: Resolution,
        keep: Duration,
        now: SystemTime,
    ) -> usize {
        let Some(horizon) = now.checked_sub(keep) else {
            return 0;
        };
        let horizon_hour = horizon
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| (d.as_secs() / 3600) as i64);
        // Hour h is wholly older than the horizon when h + 1 <= horizon (in hours).
        let mut dropped = 0;
        for versions in self
            .versions(resolution, Some((i64::MIN, horizon_hour - 1)))
            .into_values()
        {
            for file in versions {
                if std::fs::remove_file(&file.path).is_ok() {
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            tracing::info!(
                resolution = resolution.name(),
                files = dropped,
                "rollup retention dropped hours past their age"
            );
        }
        dropped
    }

    /// Deletes versions replaced more than `grace` before `now` (no query that could
    /// have listed them still runs) and temporaries older than an hour (a crash or an
    /// aborted pass). Blocking.
    pub(crate) fn remove_stale(&self, now: SystemTime, grace: Duration) {
        let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
        for resolution in Resolution::ALL {
            for versions in self.versions(resolution, None).into_values() {
                let Some((current, old)) = versions.split_first() else {
                    continue;
                };
                if age(current.modified) > grace {
                    for file in old {
                        tracing::debug!(file = %file.path.display(), "removing a replaced rollup");
                        let _ = std::fs::remove_file(&file.path);
                    }
                }
            }
            let Ok(days) = std::fs::read_dir(self.dir(resolution)) else {
                continue;
            };
            for day in days.flatten() {
                let Ok(entries) = std::fs::read_dir(day.path()) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if !(name.starts_with('.') && name.ends_with(".tmp")) {
                        continue;
                    }
                    let stale = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| age(t) > STALE_TMP);
                    if stale {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
    }
}

fn writer_properties(resolution: Resolution, fingerprint: &str) -> WriterProperties {
    WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        // Bounds the writer's buffer (a row group is held in memory until complete).
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(FINGERPRINT_KEY.to_owned(), fingerprint.to_owned()),
            KeyValue::new(RESOLUTION_KEY.to_owned(), resolution.name().to_owned()),
        ]))
        .build()
}

/// A rollup file being written under a temporary name.
pub(crate) struct HourWriter {
    tmp: PathBuf,
    dest: PathBuf,
    writer: AsyncArrowWriter<tokio::fs::File>,
    rows: u64,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl HourWriter {
    pub(super) async fn create(
        files: &RollupFiles,
        resolution: Resolution,
        hour: i64,
        fingerprint: &str,
    ) -> Result<Self> {
        let dest = files.path(resolution, hour, fingerprint);
        let dir = dest
            .parent()
            .ok_or_else(|| Error::Execution("rollup path without a directory".into()))?
            .to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_error("create", &dir, e))?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| io_error("create", &tmp, e))?;
        let writer = AsyncArrowWriter::try_new(
            file,
            fold::schema(),
            Some(writer_properties(resolution, fingerprint)),
        )
        .map_err(|e| Error::Execution(format!("rollup writer: {e}")))?;
        Ok(Self {
            tmp,
            dest,
            writer,
            rows: 0,
        })
    }

    pub(super) async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .await
            .map_err(|e| Error::Execution(format!("writing {}: {e}", self.tmp.display())))
    }

    pub(super) fn rows(&self) -> u64 {
        self.rows
    }

    /// Finishes the file, syncs it and renames it into place; its size.
    pub(super) async fn commit(mut self) -> Result<u64> {
        self.writer
            .finish()
            .await
            .map_err(|e| Error::Execution(format!("writing {}: {e}", self.tmp.display())))?;
        let mut file = self.writer.into_inner();
        file.flush()
            .await
            .map_err(|e| io_error("write", &self.tmp, e))?;
        file.sync_all()
            .await
            .map_err(|e| io_error("sync", &self.tmp, e))?;
        let bytes = file
            .metadata()
            .await
            .map_err(|e| io_error("stat", &self.tmp, e))?
            .len();
        drop(file);
        tokio::fs::rename(&self.tmp, &self.dest)
            .await
            .map_err(|e| io_error("rename", &self.tmp, e))?;
        if let Some(dir) = self.dest.parent().map(Path::to_path_buf) {
            tokio::task::spawn_blocking(move || sync_dir(&dir))
                .await
                .map_err(|e| Error::Execution(format!("sync task: {e}")))?
                .map_err(|e| io_error("sync", self.dest.parent().unwrap_or(Path::new("")), e))?;
        }
        Ok(bytes)
    }

    /// Drops the temporary file.
    pub(super) async fn abort(self) {
        drop(self.writer);
        let _ = tokio::fs::remove_file(&self.tmp).await;
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Execution(format!("{what} {}: {e}", path.display()))
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Hours covered by `[min_ns, max_ns]`.
pub(crate) fn hours_of(min_ns: i64, max_ns: i64) -> std::ops::RangeInclusive<i64> {
    min_ns.div_euclid(HOUR_NS)..=max_ns.div_euclid(HOUR_NS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let files = RollupFiles::new(Path::new("/data"));
        // 2023-11-14T22:13:20Z
        let hour = 1_700_000_000 / 3_600;
        let path = files.path(Resolution::Minute, hour, "00ff");
        assert_eq!(
            path,
            Path::new("/data/rollups/v1/1m/2023-11-14/22-00ff.parquet")
        );
        assert_eq!(hour_label(hour), "2023-11-14T22");
        assert_eq!(parse_day("2023-11-14"), Some(hour.div_euclid(24)));
        assert_eq!(parse_hour_file("22-00ff.parquet"), Some((22, "00ff")));
        for bad in [
            "24-00.parquet",
            "2-00.parquet",
            "22.parquet",
            "22-.parquet",
            "22-xyz.parquet",
            ".22-00.parquet.1.2.tmp",
            "22-00.parquet.tmp",
        ] {
            assert_eq!(parse_hour_file(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_newest_version_wins_and_replaced_ones_go_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let files = RollupFiles::new(dir.path());
        let hour = 1_700_000_000 / 3_600;
        let old = files.path(Resolution::Hour, hour, "aaaa");
        let new = files.path(Resolution::Hour, hour, "0bbb");
        std::fs::create_dir_all(old.parent().unwrap()).unwrap();
        std::fs::write(&old, b"old").unwrap();
        let then = SystemTime::now() - Duration::from_secs(600);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(then)
            .unwrap();
        std::fs::write(&new, b"new").unwrap();
        let listed = files.list(Resolution::Hour, None);
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].hour, listed[0].fingerprint.as_str()),
            (hour, "0bbb")
        );
        assert!(files.list(Resolution::Minute, None).is_empty());
        // Within the grace period both stay (a query may be reading the old one).
        files.remove_stale(SystemTime::now(), Duration::from_secs(60));
        assert!(old.exists());
        files.remove_stale(
            SystemTime::now() + Duration::from_secs(120),
            Duration::from_secs(60),
        );
        assert!(!old.exists() && new.exists());
    }

    #[test]
    fn retention_drops_only_the_hours_wholly_past_their_age() {
        let dir = tempfile::tempdir().unwrap();
        let files = RollupFiles::new(dir.path());
        let hour = 1_700_000_000 / 3_600;
        for h in [hour - 30, hour - 5, hour - 2, hour] {
            let path = files.path(Resolution::Minute, h, "aaaa");
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"rollup").unwrap();
        }
        // Keep 3 h at hour + 30 min: the horizon is hour - 2.5 h, so hours - 30 and - 5 go
        // and hour - 2 (which ends after the horizon) stays.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(hour as u64 * 3600 + 1800);
        let dropped = files.drop_expired(Resolution::Minute, Duration::from_secs(3 * 3600), now);
        assert_eq!(dropped, 2);
        let left: Vec<i64> = files
            .list(Resolution::Minute, None)
            .iter()
            .map(|f| f.hour)
            .collect();
        assert_eq!(left, [hour - 2, hour]);
    }
}
