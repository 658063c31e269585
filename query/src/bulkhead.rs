//! The query bulkhead: every query plans and runs on the query service's own runtime, with
//! bounded concurrency and a time limit enforced from outside that runtime.
//!
//! ```text
//!  HTTP handler / Postgres statement (caller's runtime: the one serving ingest, /readyz)
//!      │ wait for a slot (query.max_concurrent_queries) ≤ query.queue_timeout_ms ─> 503
//!      ▼
//!  query runtime ("weft-query" threads, QUERY_STACK_BYTES of stack each)
//!      parse ─> limits (sql_limits) ─> plan ─> execute  (DataFusion's tasks spawn here too)
//!      │
//!  caller: answer at query.timeout_secs (408) whatever the query runtime is doing, and
//!          abort the task; the slot is freed only when the task has really stopped
//! ```
//!
//! Why: DataFusion's operators are CPU-bound and only yield between batches, so a query
//! sharing threads with the receivers could stall ingest and health checks, and a timer on
//! a saturated runtime fires late. Planning and evaluation recurse on the expression tree;
//! the large stacks here (address space, committed only when used) give the bounded
//! depths of [`crate::sql_limits`] a wide margin.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::{Error, QueryConfig, Result};

/// Stack of each query thread. Only the pages a query touches are committed.
pub const QUERY_STACK_BYTES: usize = 256 << 20;

tokio::task_local! {
    /// The slot of the query running on this task, so work that outlives the handler (a
    /// streamed response body) can keep it.
    static SLOT: Arc<OwnedSemaphorePermit>;
}

/// The query runtime and its admission (see the module docs).
pub struct Bulkhead {
    /// `Some` until dropped.
    runtime: Option<Runtime>,
    handle: Handle,
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    queue_timeout: Duration,
    timeout_secs: u64,
}

impl std::fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulkhead")
            .field("max_concurrent", &self.max_concurrent)
            .field("available", &self.slots.available_permits())
            .finish()
    }
}

impl Bulkhead {
    pub fn new(config: &QueryConfig) -> Result<Self> {
        // Two more threads than a query has partitions (one per CPU), so one CPU-bound
        // query does not hold every thread; the OS shares the CPUs.
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()) + 2,
            n => n,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("weft-query")
            .thread_stack_size(QUERY_STACK_BYTES)
            .enable_all()
            .build()
            .map_err(|e| Error::Execution(format!("starting the query runtime: {e}")))?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            slots: Arc::new(Semaphore::new(config.max_concurrent_queries)),
            max_concurrent: config.max_concurrent_queries,
            queue_timeout: Duration::from_millis(config.queue_timeout_ms),
            timeout_secs: config.timeout_secs,
        })
    }

    /// Runs `work` on the query runtime once a slot is free, and answers within the time
    /// limit: when it passes, the task is aborted (DataFusion stops at its next batch) and
    /// [`Error::Timeout`] is returned at once. Dropping the returned future aborts too.
    pub async fn run<T, F>(&self, work: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let slot = match tokio::time::timeout(
            self.queue_timeout,
            std::sync::Arc::clone(&self.slots).acquire_owned(),
        )
        .await
        {
            Ok(Ok(slot)) => Arc::new(slot),
            Ok(Err(_)) | Err(_) => {
                return Err(Error::Overloaded(format!(
                    "{} queries are already running (query.max_concurrent_queries) and none \
                     finished within {} ms (query.queue_timeout_ms); try again",
                    self.max_concurrent,
                    self.queue_timeout.as_millis()
                )));
            }
        };
        // The task owns the slot: a query that ignores its abort still counts until it ends.
        let task = AbortOnDrop(self.handle.spawn(SLOT.scope(slot, work)));
        let limit = Duration::from_secs(self.timeout_secs);
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) if e.is_panic() => {
                tracing::error!(error = %e, "query panicked");
                Err(Error::Execution("the query failed unexpectedly".into()))
            }
            Ok(Err(_)) => Err(Error::Timeout(self.timeout_secs)),
            // Dropping the task (in the timeout) aborts it.
            Err(_) => Err(Error::Timeout(self.timeout_secs)),
        }
    }

    /// Spawns background query work (rollups) on the query runtime, without a slot.
    pub fn spawn<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(work)
    }

    /// The query runtime, for work that must run there (e.g. the producer of a streamed
    /// answer).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The slot of the query running on this task, if any: keep it in work that outlives
    /// the handler so the query still counts.
    pub fn current_slot() -> Option<Arc<OwnedSemaphorePermit>> {
        SLOT.try_with(Arc::clone).ok()
    }
}

impl Drop for Bulkhead {
    fn drop(&mut self) {
        // On a thread of its own: this may run in async code, even on the query runtime
        // itself (the last task holding the service), where a runtime cannot be dropped.
        if let Some(runtime) = self.runtime.take() {
            let _ = std::thread::Builder::new()
                .name("weft-query-stop".into())
                .spawn(move || runtime.shutdown_background());
        }
    }
}

/// Physical optimizer rule: operators that can emit many batches per input batch, or emit
/// from memory without reading input (joins, unnest, aggregation and sort output, windows),
/// get DataFusion's `CooperativeExec` above them. Its stream spends tokio's task budget per
/// batch, so a CPU-bound query returns to the scheduler every few batches instead of looping
/// inside one poll (a filter over a cross join that matches nothing never returned): other
/// queries get their turn, and an aborted query stops at its next yield.
/// DataFusion's own `EnsureCooperative` wraps only the leaves.
#[derive(Debug, Default)]
pub struct YieldInAmplifyingOperators;

impl YieldInAmplifyingOperators {
    fn amplifies(plan: &dyn datafusion::physical_plan::ExecutionPlan) -> bool {
        plan.children().len() >= 2
            || matches!(
                plan.name(),
                "UnnestExec"
                    | "AggregateExec"
                    | "SortExec"
                    | "WindowAggExec"
                    | "BoundedWindowAggExec"
                    | "NestedLoopJoinExec"
                    | "CrossJoinExec"
            )
    }
}

impl datafusion::physical_optimizer::PhysicalOptimizerRule for YieldInAmplifyingOperators {
    fn optimize(
        &self,
        plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        _config: &datafusion::common::config::ConfigOptions,
    ) -> datafusion::common::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::physical_plan::coop::CooperativeExec;
        plan.transform_up(|node| {
            if Self::amplifies(node.as_ref()) && node.name() != "CooperativeExec" {
                Ok(Transformed::yes(
                    Arc::new(CooperativeExec::new(node)) as Arc<_>
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "weft_yield_in_amplifying_operators"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A task handle that aborts its task when dropped (the caller gave up on it).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_concurrent_queries: usize, timeout_secs: u64) -> QueryConfig {
        QueryConfig {
            max_concurrent_queries,
            timeout_secs,
            queue_timeout_ms: 200,
            threads: 1,
            ..Default::default()
        }
    }

    /// A task that never yields is answered at the limit, not when it ends.
    #[tokio::test]
    async fn a_query_that_never_yields_is_answered_at_its_limit() {
        let bulkhead = Bulkhead::new(&config(2, 1)).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spin = std::sync::Arc::clone(&stop);
        let started = std::time::Instant::now();
        let result = bulkhead
            .run(async move {
                // Busy for up to 30 s without an await point.
                let end = std::time::Instant::now() + Duration::from_secs(30);
                while std::time::Instant::now() < end
                    && !spin.load(std::sync::atomic::Ordering::Relaxed)
                {
                    std::hint::spin_loop();
                }
                Ok(())
            })
            .await;
        assert!(matches!(result, Err(Error::Timeout(1))), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Over the concurrency limit a query waits for the queue timeout, then gets 503.
    #[tokio::test]
    async fn excess_queries_are_refused_after_waiting() {
        let bulkhead = Arc::new(Bulkhead::new(&config(1, 30)).unwrap());
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let holder = std::sync::Arc::clone(&bulkhead);
        let first = tokio::spawn(async move {
            holder
                .run(async move {
                    let _ = started_tx.send(());
                    let _ = released.await;
                    Ok(1)
                })
                .await
        });
        started_rx.await.unwrap();
        let second = bulkhead.run(async { Ok(2) }).await;
        assert!(matches!(second, Err(Error::Overloaded(_))), "{second:?}");
        assert_eq!(
            second.unwrap_err().status(),
            http::StatusCode::SERVICE_UNAVAILABLE
        );
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(bulkhead.run(async { Ok(3) }).await.unwrap(), 3);
    }

    /// Deep recursion that would overflow a default 2 MiB thread stack runs fine here.
    #[tokio::test]
    async fn query_threads_have_deep_stacks() {
        fn depth(n: u64) -> u64 {
            let pad = [n; 64];
            if n == 0 {
                0
            } else {
                1 + depth(std::hint::black_box(pad)[0] - 1)
            }
        }
        let bulkhead = Bulkhead::new(&config(1, 30)).unwrap();
        // Over 512 bytes a frame: over 20 MiB, ten times a default thread stack.
        let got = bulkhead.run(async { Ok(depth(40_000)) }).await.unwrap();
        assert_eq!(got, 40_000);
    }
}
