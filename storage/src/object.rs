//! Where Parquet files, trace-ID filters and manifests live: one object store behind
//! `storage.url`, through the `object_store` crate.
//!
//! ```text
//!  storage.url = file:///var/lib/weft        (default: the data directory)  LocalFileSystem
//!              | s3://bucket/prefix          AWS_* variables or [storage] keys  AmazonS3
//!              | gs://bucket/prefix          GOOGLE_* variables                 GCS
//!              | az://container/prefix       AZURE_* variables                  Azure Blob
//!        │
//!        ▼  ObjectStorage: the store rooted at the URL's prefix, keys are `/`-separated
//!  writers (Store::flush, quarantine, rebuild): put / create-if-absent / rename / delete,
//!     blocking calls run on this storage's own I/O runtime (flushes run on blocking threads
//!     and in tests without a runtime)
//!  readers (query service, DataFusion): the same `Arc<dyn ObjectStore>`, async
//! ```
//!
//! Every WAL stays on the node's local disk; everything listed above lives here. Requests
//! time out (`request_timeout_secs`) and are retried with exponential backoff and jitter
//! (`object_store`'s retry), so a slow or failing store makes a flush wait (the WAL keeps
//! the rows), never lose data. On local disk a `put` is followed by fsync of the file and its
//! directories, because `object_store`'s local backend only renames.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::path::Path as ObjectPath;
#[cfg(feature = "cloud")]
use object_store::prefix::PrefixStore;
#[cfg(feature = "cloud")]
use object_store::{ClientOptions, RetryConfig};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `[storage]`: where files and manifests are kept. WALs are always local.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `file:///path`, `s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix`.
    /// Empty: the node's data directory on local disk (`weft up`), or `cluster.storage`.
    pub url: String,
    /// S3: endpoint of an S3-compatible server (`http://127.0.0.1:9000`; plain HTTP is
    /// allowed for such endpoints). Empty: `AWS_ENDPOINT_URL`, else AWS itself.
    pub endpoint: String,
    /// S3: region. Empty: `AWS_REGION` / `AWS_DEFAULT_REGION`, else us-east-1.
    pub region: String,
    /// S3: credentials. Empty: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and the
    /// other standard sources: web identity, container and instance credentials).
    pub access_key_id: String,
    pub secret_access_key: String,
    /// One request (connect to last byte) longer than this fails and is retried.
    pub request_timeout_secs: u64,
    pub connect_timeout_secs: u64,
    /// Retries of a failed request (5xx, timeouts, dropped connections), with exponential
    /// backoff and jitter, within `retry_timeout_secs` of the first attempt.
    pub max_retries: usize,
    pub retry_timeout_secs: u64,
    /// Files a commit dropped (retention, rebuilds) are deleted this long after it, so a
    /// query that listed them just before still reads them.
    pub delete_grace_secs: u64,
    /// How long data is kept, by table; applied by whole hour partitions.
    pub retention: RetentionConfig,
}

/// `[storage.retention]`: hours of data kept per table (0: forever). A partition (table,
/// tenant, hour) goes once its whole hour is older than that. Reloaded on SIGHUP. (Rollups
/// are the query service's: `[query.rollups] keep_1m_hours`, `keep_1h_hours`.)
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub spans_hours: u64,
    pub metrics_hours: u64,
    /// How often each node looks for expired partitions.
    pub check_interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            spans_hours: 14 * 24,
            metrics_hours: 30 * 24,
            check_interval_secs: 60,
        }
    }
}

impl RetentionConfig {
    /// How long `table` is kept; `None`: forever.
    pub fn keep(&self, table: weft_schemas::Table) -> Option<Duration> {
        let hours = match table {
            weft_schemas::Table::Spans => self.spans_hours,
            weft_schemas::Table::Metrics => self.metrics_hours,
        };
        (hours > 0).then(|| Duration::from_secs(hours.saturating_mul(3600)))
    }
}

impl StorageConfig {
    /// `delete_grace_secs` as a duration.
    pub fn delete_grace(&self) -> Duration {
        Duration::from_secs(self.delete_grace_secs)
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            endpoint: String::new(),
            region: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            request_timeout_secs: 30,
            connect_timeout_secs: 5,
            max_retries: 10,
            retry_timeout_secs: 120,
            delete_grace_secs: 300,
            retention: RetentionConfig::default(),
        }
    }
}

/// An object store rooted at the prefix of `storage.url`; see the module docs.
pub struct ObjectStorage {
    /// The URL it was opened with (no credentials are ever part of it).
    url: String,
    store: Arc<dyn ObjectStore>,
    /// The directory of a `file://` store: written objects are fsynced there.
    local_root: Option<PathBuf>,
    /// Runs the requests of blocking callers. `Option` so that `Drop` can shut it down
    /// without blocking (a runtime must not be dropped inside another one).
    io: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("url", &self.url)
            .finish()
    }
}

impl Drop for ObjectStorage {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            io.shutdown_background();
        }
    }
}

impl ObjectStorage {
    /// Opens the store `config.url` names, or the local directory `default_dir` when it is
    /// empty. Nothing is requested from a remote store yet.
    pub fn open(config: &StorageConfig, default_dir: &Path) -> Result<Arc<Self>> {
        let url = config.url.trim();
        if url.is_empty() {
            return Self::local(default_dir);
        }
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::Config(format!("storage.url {url:?} is not a URL: {e}")))?;
        match parsed.scheme() {
            "file" => {
                let path = parsed.to_file_path().map_err(|()| {
                    Error::Config(format!("storage.url {url:?}: not an absolute file path"))
                })?;
                Self::local(&path)
            }
            #[cfg(feature = "cloud")]
            "s3" | "s3a" => Self::remote(url, &parsed, s3(url, config)?),
            #[cfg(feature = "cloud")]
            "gs" => Self::remote(url, &parsed, gcs(url, config)?),
            #[cfg(feature = "cloud")]
            "az" | "azure" | "abfs" | "abfss" => Self::remote(url, &parsed, azure(url, config)?),
            #[cfg(not(feature = "cloud"))]
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" => Err(Error::Config(format!(
                "storage.url {url:?}: this build has no cloud storage (feature `cloud`)"
            ))),
            other => Err(Error::Config(format!(
                "storage.url {url:?}: scheme {other:?} is not one of file, s3, gs, az"
            ))),
        }
    }

    /// A store in the local directory `dir` (created if missing).
    pub fn local(dir: &Path) -> Result<Arc<Self>> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Storage(format!("create {}: {e}", dir.display())))?;
        let dir = std::fs::canonicalize(dir)
            .map_err(|e| Error::Storage(format!("resolve {}: {e}", dir.display())))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| Error::Storage(format!("open {}: {e}", dir.display())))?;
        Ok(Arc::new(Self {
            url: format!("file://{}", dir.display()),
            store: Arc::new(store),
            local_root: Some(dir),
            io: Some(io_runtime()?),
        }))
    }

    #[cfg(feature = "cloud")]
    fn remote(url: &str, parsed: &url::Url, store: Arc<dyn ObjectStore>) -> Result<Arc<Self>> {
        let prefix = parsed.path().trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            store
        } else {
            let prefix = ObjectPath::parse(prefix)
                .map_err(|e| Error::Config(format!("storage.url {url:?}: {e}")))?;
            Arc::new(PrefixStore::new(store, prefix))
        };
        Ok(Arc::new(Self {
            url: url.to_owned(),
            store,
            local_root: None,
            io: Some(io_runtime()?),
        }))
    }

    /// The URL this storage was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The store itself, rooted at the URL's prefix, for async readers (DataFusion).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The directory behind a `file://` store.
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    /// Runs `work` on the I/O runtime and waits for it; usable from any thread, async
    /// workers included (it only blocks the calling thread).
    fn block<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let io = self.io.as_ref().ok_or(Error::ShuttingDown)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        io.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().map_err(|_| Error::ShuttingDown)?
    }

    /// Writes `bytes` at `key`, replacing what is there; durable when it returns.
    pub fn put(&self, key: &ObjectPath, bytes: Bytes) -> Result<()> {
        let store = Arc::clone(&self.store);
        let at = key.clone();
        self.block(async move {
            store
                .put(&at, PutPayload::from(bytes))
                .await
                .map_err(|e| object_err("write", &at, e))
        })?;
        self.sync_local(key)
    }

    /// Writes `bytes` at `key` only if nothing is there (S3 `If-None-Match: *`, a hard link
    /// on local disk). `false`: the key exists (another writer got there first).
    pub fn create(&self, key: &ObjectPath, bytes: Bytes) -> Result<bool> {
        let store = Arc::clone(&self.store);
        let at = key.clone();
        let created = self.block(async move {
            let options = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            match store.put_opts(&at, PutPayload::from(bytes), options).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                Err(e) => Err(object_err("create", &at, e)),
            }
        })?;
        if created {
            self.sync_local(key)?;
        }
        Ok(created)
    }

    /// The object at `key`, `None` when there is none.
    pub fn get(&self, key: &ObjectPath) -> Result<Option<Bytes>> {
        let store = Arc::clone(&self.store);
        let at = key.clone();
        self.block(async move { get(&*store, &at).await })
    }

    /// Every object below `prefix` (recursively), in no particular order.
    pub fn list(&self, prefix: &ObjectPath) -> Result<Vec<ObjectMeta>> {
        let store = Arc::clone(&self.store);
        let at = prefix.clone();
        self.block(async move { list(&*store, &at, None).await })
    }

    /// Removes `key`; a key that is already gone is fine.
    pub fn delete(&self, key: &ObjectPath) -> Result<()> {
        let store = Arc::clone(&self.store);
        let at = key.clone();
        self.block(async move {
            match store.delete(&at).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(object_err("delete", &at, e)),
            }
        })
    }

    /// Moves `from` to `to` (a copy and a delete on object stores). `false`: `from` did
    /// not exist.
    pub fn rename(&self, from: &ObjectPath, to: &ObjectPath) -> Result<bool> {
        let store = Arc::clone(&self.store);
        let (src, dst) = (from.clone(), to.clone());
        let moved = self.block(async move {
            match store.rename(&src, &dst).await {
                Ok(()) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(object_err("move", &src, e)),
            }
        })?;
        if moved {
            self.sync_local(to)?;
            if let Some(parent) = self.local_path(from).as_deref().and_then(Path::parent) {
                crate::wal::sync_dir(parent)
                    .map_err(|e| Error::Storage(format!("sync {}: {e}", parent.display())))?;
            }
        }
        Ok(moved)
    }

    /// Where `key` is on local disk, for a `file://` store.
    pub fn local_path(&self, key: &ObjectPath) -> Option<PathBuf> {
        self.local_root.as_ref().map(|root| {
            key.parts()
                .fold(root.clone(), |p, part| p.join(part.as_ref()))
        })
    }

    /// fsync of a written local object and of its directories up to the root (the local
    /// backend writes a temporary file and renames it, without syncing either).
    fn sync_local(&self, key: &ObjectPath) -> Result<()> {
        let (Some(root), Some(path)) = (self.local_root.as_deref(), self.local_path(key)) else {
            return Ok(());
        };
        let sync_err =
            |p: &Path, e: std::io::Error| Error::Storage(format!("sync {}: {e}", p.display()));
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| sync_err(&path, e))?;
        let mut dir = path.parent();
        while let Some(d) = dir {
            crate::wal::sync_dir(d).map_err(|e| sync_err(d, e))?;
            if d == root {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

/// `get` that maps a missing object to `None`.
pub async fn get(store: &dyn ObjectStore, key: &ObjectPath) -> Result<Option<Bytes>> {
    match store.get(key).await {
        Ok(found) => found
            .bytes()
            .await
            .map(Some)
            .map_err(|e| object_err("read", key, e)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(object_err("read", key, e)),
    }
}

/// Objects below `prefix`, only those after `offset` when given (keys sort as strings).
pub async fn list(
    store: &dyn ObjectStore,
    prefix: &ObjectPath,
    offset: Option<&ObjectPath>,
) -> Result<Vec<ObjectMeta>> {
    let stream = match offset {
        Some(offset) => store.list_with_offset(Some(prefix), offset),
        None => store.list(Some(prefix)),
    };
    stream
        .try_collect()
        .await
        .map_err(|e| object_err("list", prefix, e))
}

/// `prefix/relative` as an object key; `relative` is a `/`-separated path from a manifest.
pub fn key(prefix: &str, relative: &str) -> Result<ObjectPath> {
    let joined = match (prefix.trim_matches('/'), relative.trim_matches('/')) {
        ("", r) => r.to_owned(),
        (p, "") => p.to_owned(),
        (p, r) => format!("{p}/{r}"),
    };
    ObjectPath::parse(&joined)
        .map_err(|e| Error::Storage(format!("bad object key {joined:?}: {e}")))
}

fn object_err(what: &str, key: &ObjectPath, e: object_store::Error) -> Error {
    Error::Storage(format!("{what} {key}: {e}"))
}

fn io_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weft-object-io")
        .enable_all()
        .build()
        .map_err(|e| Error::Storage(format!("object storage runtime: {e}")))
}

#[cfg(feature = "cloud")]
fn client_options(config: &StorageConfig) -> ClientOptions {
    ClientOptions::new()
        .with_timeout(Duration::from_secs(config.request_timeout_secs.max(1)))
        .with_connect_timeout(Duration::from_secs(config.connect_timeout_secs.max(1)))
}

#[cfg(feature = "cloud")]
fn retry(config: &StorageConfig) -> RetryConfig {
    RetryConfig {
        max_retries: config.max_retries,
        retry_timeout: Duration::from_secs(config.retry_timeout_secs.max(1)),
        ..RetryConfig::default()
    }
}

#[cfg(feature = "cloud")]
fn s3(url: &str, config: &StorageConfig) -> Result<Arc<dyn ObjectStore>> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
    let mut builder = AmazonS3Builder::from_env().with_url(url);
    let set = |value: &str| (!value.trim().is_empty()).then(|| value.trim().to_owned());
    if let Some(endpoint) = set(&config.endpoint) {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = set(&config.region) {
        builder = builder.with_region(region);
    }
    if let Some(key) = set(&config.access_key_id) {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = set(&config.secret_access_key) {
        builder = builder.with_secret_access_key(secret);
    }
    // S3-compatible servers on a local network are often plain HTTP; AWS itself never is.
    let plain_http = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .is_some_and(|e| e.starts_with("http://"));
    let store = builder
        // Client options first: they replace allow_http, which is one of them.
        .with_client_options(client_options(config))
        .with_allow_http(plain_http)
        // Path-style addressing (bucket in the path), which every S3-compatible server takes.
        .with_virtual_hosted_style_request(false)
        // Manifests are created with `If-None-Match: *` (see store.rs).
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .with_retry(retry(config))
        .build()
        .map_err(|e| Error::Config(format!("storage.url {url:?}: {e}")))?;
    Ok(Arc::new(store))
}

#[cfg(feature = "cloud")]
fn gcs(url: &str, config: &StorageConfig) -> Result<Arc<dyn ObjectStore>> {
    let store = object_store::gcp::GoogleCloudStorageBuilder::from_env()
        .with_url(url)
        .with_client_options(client_options(config))
        .with_retry(retry(config))
        .build()
        .map_err(|e| Error::Config(format!("storage.url {url:?}: {e}")))?;
    Ok(Arc::new(store))
}

#[cfg(feature = "cloud")]
fn azure(url: &str, config: &StorageConfig) -> Result<Arc<dyn ObjectStore>> {
    let store = object_store::azure::MicrosoftAzureBuilder::from_env()
        .with_url(url)
        .with_client_options(client_options(config))
        .with_retry(retry(config))
        .build()
        .map_err(|e| Error::Config(format!("storage.url {url:?}: {e}")))?;
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_storage_creates_once_lists_renames_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = ObjectStorage::local(dir.path()).unwrap();
        let manifest = key("nodes/c1", "manifests/1.json").unwrap();
        assert!(
            storage
                .create(&manifest, Bytes::from_static(b"one"))
                .unwrap()
        );
        assert!(
            !storage
                .create(&manifest, Bytes::from_static(b"two"))
                .unwrap(),
            "a second create of the same key must fail"
        );
        assert_eq!(storage.get(&manifest).unwrap().unwrap(), "one");
        assert!(dir.path().join("nodes/c1/manifests/1.json").exists());

        let moved = key("quarantine", "nodes/c1/manifests/1.json").unwrap();
        assert!(storage.rename(&manifest, &moved).unwrap());
        assert!(storage.get(&manifest).unwrap().is_none());
        assert!(!storage.rename(&manifest, &moved).unwrap());
        let listed = storage.list(&key("", "quarantine").unwrap()).unwrap();
        assert_eq!(listed.len(), 1);
        storage.delete(&moved).unwrap();
        storage.delete(&moved).unwrap();
        assert!(
            storage
                .list(&key("", "quarantine").unwrap())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn urls_pick_the_backend_and_bad_ones_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let config = |url: &str| StorageConfig {
            url: url.to_owned(),
            ..StorageConfig::default()
        };
        let local = ObjectStorage::open(&config(""), dir.path()).unwrap();
        assert!(local.local_root().is_some());
        let url = format!("file://{}/other", dir.path().display());
        let other = ObjectStorage::open(&config(&url), dir.path()).unwrap();
        assert!(other.local_root().unwrap().ends_with("other"));
        let s3 = ObjectStorage::open(
            &StorageConfig {
                endpoint: "http://127.0.0.1:9".into(),
                region: "us-east-1".into(),
                access_key_id: "k".into(),
                secret_access_key: "s".into(),
                ..config("s3://bucket/some/prefix")
            },
            dir.path(),
        )
        .unwrap();
        assert!(s3.local_root().is_none());
        for (bad, says) in [
            ("ftp://x/y", "is not one of"),
            ("not a url", "is not a URL"),
        ] {
            let err = ObjectStorage::open(&config(bad), dir.path()).unwrap_err();
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }
}
