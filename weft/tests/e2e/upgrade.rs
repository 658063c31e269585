//! A data directory written by the release before the crate split (checked in under
//! `testdata/datadir-0.1`, made by `testdata/make-datadir-0.1.sh`) opens with this one:
//! its Parquet files are read through the old manifest, its WAL is replayed, and nothing is
//! lost or doubled when the new release flushes and restarts.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::common::newest_manifest;
use crate::server::TestServer;

const OLD_DATA_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/e2e/testdata/datadir-0.1"
);

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn manifest_spans(dir: &Path) -> Vec<Value> {
    let manifest: Value = newest_manifest(dir).expect("a manifest");
    manifest["tables"]["spans"]["files"]
        .as_array()
        .unwrap()
        .clone()
}

async fn counts(server: &TestServer) -> (u64, u64, u64) {
    let named = |name: &str| format!("SELECT count(*) AS n FROM spans WHERE span_name = '{name}'");
    (
        server.sql_count(&named("flushed")).await,
        server.sql_count(&named("in-wal")).await,
        server
            .sql_count("SELECT count(*) AS n FROM metrics WHERE metric_name = 'upgrade.requests'")
            .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_the_previous_release_opens_whole() {
    let tempdir = tempfile::tempdir().unwrap();
    let dir = tempdir.path().join("data");
    copy_dir(Path::new(OLD_DATA_DIR), &dir);
    let old_files = manifest_spans(&dir);
    assert_eq!(old_files.len(), 1, "the old release flushed once");
    assert!(
        old_files[0].get("wal_records").is_none(),
        "written by the old release"
    );

    let mut first = TestServer::start_in(&dir, &[]);
    assert_eq!(
        counts(&first).await,
        (40, 25, 3),
        "Parquet read, WAL replayed"
    );
    assert!(first.stop().success());

    // The new release flushed the replayed rows beside the old file, and says where from.
    let files = manifest_spans(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files.contains(&old_files[0]),
        "the old entry is kept as it was"
    );
    assert!(
        files
            .iter()
            .any(|f| f["wal_records"]["last"].as_u64().is_some())
    );

    let second = TestServer::start_in(&dir, &[]);
    assert_eq!(
        counts(&second).await,
        (40, 25, 3),
        "nothing doubled after a restart"
    );
    drop(second);
}
