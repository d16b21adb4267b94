//! Background work as services under one supervisor.
//!
//! Every long-running task perfgate starts (the proxy and admin servers,
//! health probes, the invalidation fan-out listener, job workers, warm-up
//! jobs) is a *service*: a future that takes a [`Shutdown`] and returns when
//! it is asked to. A [`Supervisor`] starts them, names them, logs how they
//! end, and stops them: on process shutdown, or — through a [`Scope`] —
//! when a reload retires the part of the configuration they served. Both
//! go through the same signal.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod clock;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{Id, JoinSet};

/// Tells a service to stop. Cheap to clone; every clone sees the request.
#[derive(Clone, Debug)]
pub struct Shutdown {
    own: watch::Receiver<bool>,
    parent: Option<watch::Receiver<bool>>,
}

impl Shutdown {
    /// Resolves once stopping is asked for (at once if it already was).
    pub async fn requested(&mut self) {
        match &mut self.parent {
            None => {
                let _ = self.own.wait_for(|v| *v).await;
            }
            Some(parent) => {
                tokio::select! {
                    _ = self.own.wait_for(|v| *v) => {}
                    _ = parent.wait_for(|v| *v) => {}
                }
            }
        }
    }

    /// Whether stopping was asked for.
    pub fn is_requested(&self) -> bool {
        *self.own.borrow() || self.parent.as_ref().is_some_and(|p| *p.borrow())
    }
}

struct Inner {
    stop: watch::Sender<bool>,
    tasks: Mutex<Tasks>,
}

#[derive(Default)]
struct Tasks {
    set: JoinSet<()>,
    names: HashMap<Id, &'static str>,
}

impl Tasks {
    /// Forgets the tasks that ended, logging those that panicked.
    fn reap(&mut self) {
        while let Some(done) = self.set.try_join_next_with_id() {
            self.ended(done);
        }
    }

    fn ended(&mut self, done: Result<(Id, ()), tokio::task::JoinError>) {
        match done {
            Ok((id, ())) => {
                let name = self.names.remove(&id).unwrap_or("service");
                tracing::debug!(service = name, "service stopped");
            }
            Err(e) => {
                let name = self.names.remove(&e.id()).unwrap_or("service");
                if e.is_panic() {
                    tracing::error!(service = name, "service panicked");
                }
            }
        }
    }
}

/// Starts services and stops them all through one signal.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("running", &self.running())
            .finish()
    }
}

impl Supervisor {
    /// A supervisor with no service yet.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                stop: watch::channel(false).0,
                tasks: Mutex::new(Tasks::default()),
            }),
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Tasks> {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The signal every service of this supervisor gets.
    pub fn shutdown_signal(&self) -> Shutdown {
        Shutdown {
            own: self.inner.stop.subscribe(),
            parent: None,
        }
    }

    /// Starts `service` with its own [`Shutdown`]. Started after shutdown
    /// began, it gets a signal that is already set.
    pub fn spawn<F, Fut>(&self, name: &'static str, service: F)
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.spawn_with(name, self.shutdown_signal(), service);
    }

    fn spawn_with<F, Fut>(&self, name: &'static str, signal: Shutdown, service: F)
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let fut = service(signal);
        let mut tasks = self.tasks();
        tasks.reap();
        let id = tasks.set.spawn(fut).id();
        tasks.names.insert(id, name);
        tracing::debug!(service = name, "service started");
    }

    /// A scope whose services stop on [`Scope::stop`] (a reload retiring
    /// what they served) or with the whole supervisor.
    pub fn scope(&self) -> Scope {
        Scope {
            supervisor: self.clone(),
            stop: watch::channel(false).0,
        }
    }

    /// Services still running.
    pub fn running(&self) -> usize {
        let mut tasks = self.tasks();
        tasks.reap();
        tasks.set.len()
    }

    /// Asks every service to stop and waits up to `grace` for them; those
    /// still running then are aborted. Returns their names.
    pub async fn shutdown(&self, grace: Duration) -> Vec<&'static str> {
        self.inner.stop.send_replace(true);
        let mut set = {
            let mut tasks = self.tasks();
            std::mem::take(&mut *tasks)
        };
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            match tokio::time::timeout_at(deadline, set.set.join_next_with_id()).await {
                Ok(Some(done)) => set.ended(done),
                Ok(None) => return Vec::new(),
                Err(_) => break,
            }
        }
        let mut late: Vec<&'static str> = set.names.values().copied().collect();
        late.sort_unstable();
        for name in &late {
            tracing::warn!(
                service = name,
                ?grace,
                "service did not stop in time; aborted"
            );
        }
        set.set.abort_all();
        while set.set.join_next().await.is_some() {}
        late
    }
}

/// Services that stop together before the rest (those of one pool, one
/// route's job workers), or with the supervisor.
#[derive(Debug)]
pub struct Scope {
    supervisor: Supervisor,
    stop: watch::Sender<bool>,
}

impl Scope {
    /// Starts `service` in this scope.
    pub fn spawn<F, Fut>(&self, name: &'static str, service: F)
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let signal = Shutdown {
            own: self.stop.subscribe(),
            parent: Some(self.supervisor.inner.stop.subscribe()),
        };
        self.supervisor.spawn_with(name, signal, service);
    }

    /// Asks this scope's services to stop.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for Scope {
    /// What a scope started does not outlive it.
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn shutdown_stops_every_service_and_reports_none_late() {
        let sup = Supervisor::new();
        let stopped = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let stopped = stopped.clone();
            sup.spawn("worker", move |mut s| async move {
                s.requested().await;
                stopped.fetch_add(1, Ordering::SeqCst);
            });
        }
        assert_eq!(sup.running(), 3);
        let late = sup.shutdown(Duration::from_secs(5)).await;
        assert!(late.is_empty(), "{late:?}");
        assert_eq!(stopped.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_that_ignores_shutdown_is_aborted_and_named() {
        let sup = Supervisor::new();
        sup.spawn("stubborn", |_s| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        sup.spawn("polite", |mut s| async move { s.requested().await });
        let late = sup.shutdown(Duration::from_secs(1)).await;
        assert_eq!(late, vec!["stubborn"]);
        assert_eq!(sup.running(), 0);
    }

    #[tokio::test]
    async fn a_scope_stops_its_services_alone() {
        let sup = Supervisor::new();
        let scope = sup.scope();
        let (tx, rx) = tokio::sync::oneshot::channel();
        scope.spawn("probe", |mut s| async move {
            s.requested().await;
            let _ = tx.send(());
        });
        sup.spawn("server", |mut s| async move { s.requested().await });
        drop(scope);
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("the scoped service stopped")
            .expect("sent");
        assert_eq!(sup.running(), 1, "the unscoped service runs on");
        assert!(sup.shutdown(Duration::from_secs(5)).await.is_empty());
    }

    #[tokio::test]
    async fn a_scope_stops_with_the_supervisor() {
        let sup = Supervisor::new();
        let scope = sup.scope();
        scope.spawn("probe", |mut s| async move { s.requested().await });
        assert!(sup.shutdown(Duration::from_secs(5)).await.is_empty());
        drop(scope);
    }

    #[tokio::test]
    async fn a_service_started_after_shutdown_sees_the_signal_at_once() {
        let sup = Supervisor::new();
        sup.shutdown(Duration::from_secs(1)).await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        sup.spawn("late", |s| async move {
            let _ = tx.send(s.is_requested());
        });
        assert!(rx.await.expect("ran"));
    }
}
