//! The query pool: reads run on their own runtime, never on the workers that decode, log and
//! acknowledge writes; `max_concurrency` at once, a short queue, then 503; a read whose client
//! goes away (its handler future is dropped) is aborted and its evaluation told to stop.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Why the pool did not run a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PoolError {
    /// Every slot busy and the queue full: 503 + Retry-After.
    #[error("too many queries in flight and queued; retry later")]
    Busy,
    /// Waited in the queue for as long as the query could have run.
    #[error("query timed out waiting for a free query slot")]
    QueueTimeout,
    /// Ran past the pool's hard limit (the engine's own deadline normally stops it first).
    #[error("query timed out")]
    Timeout,
    /// The read panicked or its runtime is shutting down (logged; 500).
    #[error("query task failed")]
    Failed,
}

/// Set when the read's client has gone away; the PromQL engine checks it with its deadline.
pub(crate) type CancelFlag = Arc<AtomicBool>;

/// Counters of the pool, shown at `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct PoolStats {
    /// Reads running now.
    pub(crate) in_flight: AtomicI64,
    /// Reads waiting for a slot now.
    pub(crate) queued: AtomicI64,
    /// Reads refused because the queue was full (or timed out in it).
    pub(crate) rejected: AtomicU64,
}

/// A runtime of `threads` workers for reads, and the admission control in front of it.
#[derive(Debug)]
pub(crate) struct QueryPool {
    runtime: Option<Runtime>,
    handle: Handle,
    slots: Arc<Semaphore>,
    max_queued: i64,
    stats: Arc<PoolStats>,
}

/// Decrements a gauge when dropped.
struct GaugeGuard<'a>(&'a AtomicI64);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Aborts the read (and flags its evaluation) when the waiting handler is dropped.
#[derive(Debug)]
struct AbortOnDrop<T> {
    task: JoinHandle<T>,
    cancel: CancelFlag,
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

impl QueryPool {
    /// Starts the pool's runtime (`fleetgate-query` threads).
    pub(crate) fn new(
        threads: usize,
        max_concurrency: usize,
        max_queued: usize,
    ) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("fleetgate-query")
            // parsing and evaluation recurse once per level of a query (bounded at parse)
            .thread_stack_size(fleetgate_query::parse::EVAL_STACK_BYTES)
            .enable_all()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            slots: Arc::new(Semaphore::new(max_concurrency.max(1))),
            max_queued: i64::try_from(max_queued).unwrap_or(i64::MAX),
            stats: Arc::new(PoolStats::default()),
        })
    }

    /// The pool's runtime (where PostgreSQL connections run).
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The pool's counters.
    pub(crate) fn stats(&self) -> &PoolStats {
        &self.stats
    }

    /// Runs `make(cancel)` on the pool once a slot is free and waits for it, aborting it after
    /// `limit`; see [`QueryPool::spawn`].
    pub(crate) async fn run<F, Fut, T>(
        &self,
        queue_timeout: Duration,
        limit: Duration,
        make: F,
    ) -> Result<T, PoolError>
    where
        F: FnOnce(CancelFlag) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.spawn(queue_timeout, Some(limit), make)
            .await?
            .join()
            .await
    }

    /// Starts `make(cancel)` on the pool once a slot is free (waiting at most `queue_timeout`
    /// in a queue of at most `max_queued`), aborted after `limit` if one is given. Dropping the
    /// returned [`Running`] (the client went away) aborts the read and sets `cancel`.
    pub(crate) async fn spawn<F, Fut, T>(
        &self,
        queue_timeout: Duration,
        limit: Option<Duration>,
        make: F,
    ) -> Result<Running<T>, PoolError>
    where
        F: FnOnce(CancelFlag) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let permit = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.stats.queued.fetch_add(1, Ordering::Relaxed) >= self.max_queued {
                    self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    return Err(PoolError::Busy);
                }
                let _queued = GaugeGuard(&self.stats.queued);
                match tokio::time::timeout(queue_timeout, Arc::clone(&self.slots).acquire_owned())
                    .await
                {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(PoolError::Failed),
                    Err(_) => {
                        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        return Err(PoolError::QueueTimeout);
                    }
                }
            }
        };
        let cancel: CancelFlag = Arc::new(AtomicBool::new(false));
        let fut = make(Arc::clone(&cancel));
        let stats = Arc::clone(&self.stats);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let flag = Arc::clone(&cancel);
        let task = self.handle.spawn(async move {
            let _permit = permit;
            let _in_flight = GaugeGuard(&stats.in_flight);
            match limit {
                None => Ok(fut.await),
                Some(d) => tokio::time::timeout(d, fut).await.map_err(|_| {
                    flag.store(true, Ordering::Relaxed);
                    PoolError::Timeout
                }),
            }
        });
        Ok(Running(AbortOnDrop { task, cancel }))
    }
}

/// A read running on the pool; dropping it aborts the read.
#[derive(Debug)]
pub(crate) struct Running<T>(AbortOnDrop<Result<T, PoolError>>);

impl<T> Running<T> {
    /// Waits for the read's result.
    pub(crate) async fn join(mut self) -> Result<T, PoolError> {
        match (&mut self.0.task).await {
            Ok(v) => v,
            Err(e) => {
                if e.is_panic() {
                    tracing::error!(error = %e, "query task panicked");
                }
                Err(PoolError::Failed)
            }
        }
    }
}

impl Drop for QueryPool {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admission_queue_and_cancellation() {
        let pool = Arc::new(QueryPool::new(1, 1, 1).unwrap());
        assert_eq!(
            pool.run(Duration::from_secs(1), Duration::from_secs(60), |_| async {
                7
            })
            .await,
            Ok(7)
        );
        // occupy the only slot with a read that runs until canceled
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let p = Arc::clone(&pool);
        let long = tokio::spawn(async move {
            p.run(
                Duration::from_secs(1),
                Duration::from_secs(60),
                |cancel| async move {
                    let _ = started_tx.send(());
                    while !cancel.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                },
            )
            .await
        });
        started_rx.await.unwrap();
        assert_eq!(pool.stats().in_flight.load(Ordering::Relaxed), 1);
        // one may queue (and times out), the next is refused at once
        let p = Arc::clone(&pool);
        let queued = tokio::spawn(async move {
            p.run(
                Duration::from_millis(300),
                Duration::from_secs(60),
                |_| async {},
            )
            .await
        });
        while pool.stats().queued.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            pool.run(Duration::from_secs(1), Duration::from_secs(60), |_| async {
            })
            .await,
            Err(PoolError::Busy)
        );
        assert_eq!(queued.await.unwrap(), Err(PoolError::QueueTimeout));
        // the client goes away: the read is aborted and the slot comes back
        long.abort();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.stats().in_flight.load(Ordering::Relaxed) != 0 {
            assert!(std::time::Instant::now() < deadline, "read not released");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            pool.run(Duration::from_secs(1), Duration::from_secs(60), |_| async {
                1
            })
            .await,
            Ok(1)
        );
        assert_eq!(pool.stats().rejected.load(Ordering::Relaxed), 2);
        // past its hard limit a read is stopped
        let r = pool
            .run(Duration::from_secs(1), Duration::from_millis(50), |_| {
                tokio::time::sleep(Duration::from_secs(30))
            })
            .await;
        assert_eq!(r, Err(PoolError::Timeout));
    }
}
