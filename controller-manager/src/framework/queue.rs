//! A rate-limited, de-duplicating work queue, shaped like client-go's `workqueue`.
//!
//! Guarantees: an item is never handed to two workers at once; an item added while it is being
//! processed is queued again once [`WorkQueue::done`] is called (so no change is lost); an item
//! added several times before a worker picks it up is processed once. Retries back off per item
//! exponentially (5 ms doubling to 1000 s) combined with a global token bucket (10 qps, burst
//! 100), the maximum of the two winning, as client-go's `DefaultControllerRateLimiter`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::metrics::QueueMetrics;

/// Per-item exponential backoff plus a global token bucket.
#[derive(Debug)]
pub struct RateLimiter<T> {
    base: Duration,
    max: Duration,
    failures: HashMap<T, u32>,
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl<T: Hash + Eq + Clone> Default for RateLimiter<T> {
    fn default() -> Self {
        Self::new(
            Duration::from_millis(5),
            Duration::from_secs(1000),
            10.0,
            100,
        )
    }
}

impl<T: Hash + Eq + Clone> RateLimiter<T> {
    pub fn new(base: Duration, max: Duration, qps: f64, burst: u32) -> Self {
        Self {
            base,
            max,
            failures: HashMap::new(),
            qps,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: None,
        }
    }

    /// The delay before `item` may be retried; counts one more failure for it.
    pub fn when(&mut self, item: &T) -> Duration {
        let n = self.failures.entry(item.clone()).or_insert(0);
        let exp = self.base.as_secs_f64() * 2f64.powi((*n).min(64) as i32);
        *n += 1;
        let per_item = Duration::from_secs_f64(exp.min(self.max.as_secs_f64()));
        per_item.max(self.reserve())
    }

    /// Reserve one token from the global bucket; returns how long until it is available.
    fn reserve(&mut self) -> Duration {
        let now = Instant::now();
        if let Some(last) = self.last {
            self.tokens =
                (self.tokens + now.duration_since(last).as_secs_f64() * self.qps).min(self.burst);
        }
        self.last = Some(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.qps)
        }
    }

    pub fn forget(&mut self, item: &T) {
        self.failures.remove(item);
    }

    pub fn num_requeues(&self, item: &T) -> u32 {
        self.failures.get(item).copied().unwrap_or(0)
    }
}

struct State<T> {
    queue: VecDeque<T>,
    dirty: HashSet<T>,
    processing: HashSet<T>,
    /// Items waiting for `add_after`, with the earliest time they become ready.
    waiting: HashMap<T, Instant>,
    limiter: RateLimiter<T>,
    shutting_down: bool,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    notify: Notify,
    metrics: Option<QueueMetrics>,
}

/// A cloneable handle to one controller's queue.
pub struct WorkQueue<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Hash + Eq + Clone + Send + Sync + 'static> WorkQueue<T> {
    /// A queue with client-go's default rate limiter and no metrics.
    pub fn new() -> Self {
        Self::with_limiter(RateLimiter::default(), None)
    }

    pub fn with_limiter(limiter: RateLimiter<T>, metrics: Option<QueueMetrics>) -> Self {
        let state = State {
            queue: VecDeque::new(),
            dirty: HashSet::new(),
            processing: HashSet::new(),
            waiting: HashMap::new(),
            limiter,
            shutting_down: false,
        };
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                notify: Notify::new(),
                metrics,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `item` now (a no-op if it is already queued).
    pub fn add(&self, item: T) {
        let mut s = self.lock();
        if s.shutting_down || s.dirty.contains(&item) {
            return;
        }
        s.dirty.insert(item.clone());
        if let Some(m) = &self.inner.metrics {
            m.adds.inc();
        }
        if s.processing.contains(&item) {
            return;
        }
        s.queue.push_back(item);
        self.set_depth(&s);
        drop(s);
        self.inner.notify.notify_one();
    }

    /// Queue `item` after `delay`; an earlier pending `add_after` for the same item wins.
    pub fn add_after(&self, item: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(item);
        }
        let at = Instant::now() + delay;
        {
            let mut s = self.lock();
            if s.shutting_down {
                return;
            }
            match s.waiting.get(&item) {
                Some(existing) if *existing <= at => return,
                _ => {
                    s.waiting.insert(item.clone(), at);
                }
            }
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let ready = {
                let mut s = q.lock();
                if s.waiting.get(&item) == Some(&at) {
                    s.waiting.remove(&item);
                    true
                } else {
                    false
                }
            };
            if ready {
                q.add(item);
            }
        });
    }

    /// Queue `item` after its rate-limited backoff.
    pub fn add_rate_limited(&self, item: T) {
        let d = self.lock().limiter.when(&item);
        self.add_after(item, d);
    }

    /// Stop tracking retries of `item` (after a success).
    pub fn forget(&self, item: &T) {
        self.lock().limiter.forget(item);
    }

    pub fn num_requeues(&self, item: &T) -> u32 {
        self.lock().limiter.num_requeues(item)
    }

    /// The next item to process, or `None` once the queue shuts down. Call [`WorkQueue::done`]
    /// afterwards.
    pub async fn get(&self) -> Option<T> {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if s.shutting_down {
                    return None;
                }
                if let Some(item) = s.queue.pop_front() {
                    s.dirty.remove(&item);
                    s.processing.insert(item.clone());
                    self.set_depth(&s);
                    // Let another idle worker look at the rest of the queue.
                    if !s.queue.is_empty() {
                        self.inner.notify.notify_one();
                    }
                    return Some(item);
                }
            }
            notified.await;
        }
    }

    /// Mark `item` processed; if it was added meanwhile it is queued again.
    pub fn done(&self, item: &T) {
        let mut s = self.lock();
        s.processing.remove(item);
        if s.dirty.contains(item) && !s.shutting_down {
            s.queue.push_back(item.clone());
            self.set_depth(&s);
            drop(s);
            self.inner.notify.notify_one();
        }
    }

    /// Items queued and not yet handed out.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wake every worker and make [`WorkQueue::get`] return `None`.
    pub fn shut_down(&self) {
        self.lock().shutting_down = true;
        self.inner.notify.notify_waiters();
    }

    fn set_depth(&self, s: &State<T>) {
        if let Some(m) = &self.inner.metrics {
            m.depth.set(s.queue.len() as i64);
        }
    }
}

impl<T: Hash + Eq + Clone + Send + Sync + 'static> Default for WorkQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_5ms_and_caps_at_1000s() {
        let mut l: RateLimiter<&str> = RateLimiter::new(
            Duration::from_millis(5),
            Duration::from_secs(1000),
            1e9,
            1_000_000,
        );
        let got: Vec<_> = (0..4).map(|_| l.when(&"a")).collect();
        assert_eq!(got, [5, 10, 20, 40].map(Duration::from_millis));
        for _ in 0..30 {
            l.when(&"a");
        }
        assert_eq!(l.when(&"a"), Duration::from_secs(1000));
        assert_eq!(l.when(&"b"), Duration::from_millis(5));
        l.forget(&"a");
        assert_eq!(l.num_requeues(&"a"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn global_bucket_limits_after_burst() {
        let mut l: RateLimiter<u32> = RateLimiter::new(
            Duration::from_millis(5),
            Duration::from_secs(1000),
            10.0,
            100,
        );
        for i in 0..100 {
            assert_eq!(l.when(&i), Duration::from_millis(5));
        }
        assert_eq!(l.when(&1000), Duration::from_millis(100));
        assert_eq!(l.when(&1001), Duration::from_millis(200));
    }

    #[tokio::test]
    async fn dedups_and_requeues_items_added_while_processing() {
        let q: WorkQueue<&str> = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let a = q.get().await.unwrap();
        assert_eq!(a, "a");
        q.add("a"); // changed while processing: not handed out twice
        assert_eq!(q.get().await.unwrap(), "b");
        assert!(q.is_empty());
        q.done(&"a");
        assert_eq!(q.get().await.unwrap(), "a");
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_keeps_the_earliest_deadline() {
        let q: WorkQueue<&str> = WorkQueue::new();
        q.add_after("a", Duration::from_secs(10));
        q.add_after("a", Duration::from_secs(1));
        q.add_after("a", Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(q.len(), 1);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(q.len(), 1);
    }

    #[tokio::test]
    async fn shut_down_releases_waiting_workers() {
        let q: WorkQueue<u8> = WorkQueue::new();
        let q2 = q.clone();
        let w = tokio::spawn(async move { q2.get().await });
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(w.await.unwrap(), None);
    }
}
