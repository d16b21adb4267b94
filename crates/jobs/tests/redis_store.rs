//! The Redis Streams job store against a real `redis-server` (skipped, with
//! a message, when Redis is not installed outside CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use perfgate_config::RedisConfig;
use perfgate_jobs::redis::RedisStore;
use perfgate_jobs::{Job, JobRequest, JobResult, JobState, StoreError, Submitted};
use perfgate_redis::Redis as L2;
use perfgate_test_support::{PATIENCE, RedisCluster, RedisServer, eventually_async, unique_name};

const ROUTE: &str = "analyze";
const TTL_MS: u64 = 60_000;
const MAX: usize = 10_000;

/// A connected L2 with a key prefix of its own.
async fn l2(server: &RedisServer, prefix: &str) -> L2 {
    let l2 = L2::start(&RedisConfig {
        url: server.url(),
        timeout: perfgate_config::Duration(Duration::from_millis(200)),
        retry_after: perfgate_config::Duration::from_millis(100),
        key_prefix: prefix.to_string(),
        ..RedisConfig::default()
    })
    .unwrap();
    eventually_async("the L2 to connect", PATIENCE, || async {
        l2.health().state == "up"
    })
    .await;
    l2
}

/// A server and a store on it (None: Redis not installed, test skipped).
async fn setup(lease: Duration) -> Option<(RedisServer, L2, RedisStore)> {
    let Some(server) = RedisServer::start() else {
        eprintln!("SKIPPED: redis-server is not available");
        return None;
    };
    let l2 = l2(&server, &unique_name("jobs")).await;
    let store = RedisStore::new(l2.clone(), lease);
    Some((server, l2, store))
}

fn job(route: &str, body: &str) -> Job {
    Job::new(
        route,
        JobRequest {
            method: "POST".into(),
            target: "/api/v1/analyze".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            ..JobRequest::default()
        },
        Bytes::from(body.to_string()),
        perfgate_jobs::job::now_ms(),
    )
}

fn with_dedup(mut j: Job, key: &str) -> Job {
    j.dedup = Some(key.to_string());
    j
}

fn with_priority(mut j: Job, priority: i32) -> Job {
    j.priority = priority;
    j
}

async fn submit_new(store: &RedisStore, j: Job) -> Job {
    match store.submit(j, MAX).await.unwrap() {
        Submitted::New(j) => j,
        other => panic!("expected a new job, got {other:?}"),
    }
}

fn succeed(mut j: Job, body: &'static [u8]) -> Job {
    j.state = JobState::Succeeded;
    j.finished_ms = Some(perfgate_jobs::job::now_ms());
    j.result = Some(JobResult {
        status: 200,
        headers: vec![("content-type".into(), "application/octet-stream".into())],
    });
    j.result_body = Bytes::from_static(body);
    j
}

fn terminal(mut j: Job, state: JobState) -> Job {
    j.state = state;
    j.finished_ms = Some(perfgate_jobs::job::now_ms());
    j
}

/// Claims on `ROUTE` until a job comes, within PATIENCE.
async fn claim_eventually(store: &RedisStore, what: &str) -> Job {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(j) = store.claim(ROUTE).await.unwrap() {
            return j;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count(store_counts: &perfgate_jobs::Counts, route: &str, state: JobState) -> i64 {
    store_counts
        .by_route
        .get(route)
        .and_then(|s| s.get(&state))
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn submit_claim_finish_and_get_the_result() {
    let Some((_server, _l2, store)) = setup(Duration::from_secs(30)).await else {
        return;
    };
    let submitted = submit_new(&store, job(ROUTE, r#"{"url":"https://example.com"}"#)).await;
    let queued = store.get(&submitted.id).await.unwrap().unwrap();
    assert_eq!(queued.state, JobState::Queued);
    assert_eq!(queued.body, submitted.body);

    let claimed = store.claim(ROUTE).await.unwrap().expect("a job to claim");
    assert_eq!(claimed.id, submitted.id);
    assert_eq!(claimed.state, JobState::Running);
    assert_eq!(claimed.attempts, 1);
    assert!(claimed.started_ms.is_some());
    assert!(
        store.claim(ROUTE).await.unwrap().is_none(),
        "claimed once only"
    );
    assert!(store.claim("other-route").await.unwrap().is_none());
    let running = store.get(&submitted.id).await.unwrap().unwrap();
    assert_eq!((running.state, running.attempts), (JobState::Running, 1));
    store.heartbeat(&claimed).await.unwrap();

    // Binary-safe result bodies.
    store
        .finish(succeed(claimed, &[0, 159, 146, 150, 255]), TTL_MS)
        .await
        .unwrap();
    let done = store.get(&submitted.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result.as_ref().map(|r| r.status), Some(200));
    assert_eq!(done.result_body.as_ref(), &[0, 159, 146, 150, 255]);
    assert!(
        store.claim(ROUTE).await.unwrap().is_none(),
        "a finished job is not claimed again"
    );
    assert!(matches!(
        store.heartbeat(&done).await,
        Err(StoreError::WrongState("succeeded"))
    ));
    assert!(
        store
            .get("0123456789abcdef0123456789abcdef")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn dedup_is_duplicate_while_live_done_after_success_and_new_after_dead() {
    let Some((_server, _l2, store)) = setup(Duration::from_secs(30)).await else {
        return;
    };
    let first = submit_new(&store, with_dedup(job(ROUTE, "a"), "k1")).await;
    match store
        .submit(with_dedup(job(ROUTE, "a"), "k1"), MAX)
        .await
        .unwrap()
    {
        Submitted::Duplicate(j) => assert_eq!(
            (j.id.as_str(), j.state),
            (first.id.as_str(), JobState::Queued)
        ),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    let claimed = store.claim(ROUTE).await.unwrap().unwrap();
    match store
        .submit(with_dedup(job(ROUTE, "a"), "k1"), MAX)
        .await
        .unwrap()
    {
        Submitted::Duplicate(j) => assert_eq!(
            (j.id.as_str(), j.state),
            (first.id.as_str(), JobState::Running)
        ),
        other => panic!("expected a duplicate of the running job, got {other:?}"),
    }
    store.finish(succeed(claimed, b"ok"), TTL_MS).await.unwrap();
    match store
        .submit(with_dedup(job(ROUTE, "a"), "k1"), MAX)
        .await
        .unwrap()
    {
        Submitted::Done(j) => {
            assert_eq!(j.id, first.id);
            assert_eq!(j.state, JobState::Succeeded);
            assert_eq!(j.result_body.as_ref(), b"ok");
        }
        other => panic!("expected the finished job, got {other:?}"),
    }

    // A dead job is no answer: the same work again is a new job.
    let second = submit_new(&store, with_dedup(job(ROUTE, "b"), "k2")).await;
    let claimed = store.claim(ROUTE).await.unwrap().unwrap();
    assert_eq!(claimed.id, second.id);
    store
        .finish(terminal(claimed, JobState::Dead), TTL_MS)
        .await
        .unwrap();
    let third = submit_new(&store, with_dedup(job(ROUTE, "b"), "k2")).await;
    assert_ne!(third.id, second.id);
    match store
        .submit(with_dedup(job(ROUTE, "b"), "k2"), MAX)
        .await
        .unwrap()
    {
        Submitted::Duplicate(j) => assert_eq!(j.id, third.id),
        other => panic!("expected a duplicate of the new job, got {other:?}"),
    }
}

#[tokio::test]
async fn a_failed_job_is_never_an_answer_to_a_new_submission() {
    let Some((_server, _l2, store)) = setup(Duration::from_secs(30)).await else {
        return;
    };
    let first = submit_new(&store, with_dedup(job(ROUTE, "f"), "kf")).await;
    let claimed = store.claim(ROUTE).await.unwrap().unwrap();
    assert_eq!(claimed.id, first.id);
    store
        .finish(terminal(claimed, JobState::Failed), TTL_MS)
        .await
        .unwrap();
    // A 4xx answered its submitter only: the same work again is new work.
    let second = submit_new(&store, with_dedup(job(ROUTE, "f"), "kf")).await;
    assert_ne!(second.id, first.id);
    assert_eq!(
        store.get(&first.id).await.unwrap().unwrap().state,
        JobState::Failed
    );
}

#[tokio::test]
async fn concurrent_identical_submissions_make_one_job() {
    let Some((server, l2, store)) = setup(Duration::from_secs(30)).await else {
        return;
    };
    // A second instance: its own L2 connection, same prefix.
    let other = RedisStore::new(
        self::l2(&server, &prefix_of(&l2)).await,
        Duration::from_secs(30),
    );
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            s.submit(with_dedup(job(ROUTE, "same"), "same-work"), MAX)
                .await
                .unwrap()
        }));
    }
    let mut new = 0;
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        match t.await.unwrap() {
            Submitted::New(j) => {
                new += 1;
                ids.insert(j.id);
            }
            Submitted::Duplicate(j) => {
                ids.insert(j.id);
            }
            Submitted::Done(j) => panic!("nothing finished yet: {j:?}"),
        }
    }
    assert_eq!(new, 1, "exactly one submission makes the job");
    assert_eq!(ids.len(), 1, "every submission names that job");
    assert_eq!(count(&store.counts().await, ROUTE, JobState::Queued), 1);
}

/// The key prefix an L2 was started with (`key("")` is `prefix:`).
fn prefix_of(l2: &L2) -> String {
    l2.key("").trim_end_matches(':').to_string()
}

#[tokio::test]
async fn higher_priority_first_without_starving_the_rest() {
    let Some((_server, _l2, store)) = setup(Duration::from_secs(30)).await else {
        return;
    };
    let mut low = Vec::new();
    for i in 0..6 {
        low.push(
            submit_new(&store, with_priority(job(ROUTE, &format!("low {i}")), -1))
                .await
                .id,
        );
    }
    let normal = submit_new(&store, job(ROUTE, "normal")).await.id;
    let mut high = Vec::new();
    for i in 0..6 {
        high.push(
            submit_new(&store, with_priority(job(ROUTE, &format!("high {i}")), 5))
                .await
                .id,
        );
    }
    let mut order = Vec::new();
    while let Some(j) = store.claim(ROUTE).await.unwrap() {
        order.push(j.id);
    }
    assert_eq!(order.len(), 13);
    // The high band first, in submission order...
    assert_eq!(order[..4], high[..4]);
    // ...but every fifth claim serves the lowest band first.
    assert_eq!(
        order[4], low[0],
        "the fifth claim takes the oldest low-priority job"
    );
    assert_eq!(order[5..7], high[4..6]);
    assert_eq!(order[7], normal);
    assert_eq!(order[8..], low[1..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_share_the_work_and_never_claim_a_job_twice() {
    let Some((server, l2, store)) = setup(Duration::from_secs(30)).await else {
        return;
    };
    let other = RedisStore::new(
        self::l2(&server, &prefix_of(&l2)).await,
        Duration::from_secs(30),
    );
    let mut submitted = Vec::new();
    for i in 0..50 {
        submitted.push(submit_new(&store, job(ROUTE, &format!("job {i}"))).await.id);
    }
    let mut workers = Vec::new();
    for s in [store.clone(), other.clone(), store.clone(), other.clone()] {
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(j) = s.claim(ROUTE).await.unwrap() {
                mine.push(j.id.clone());
                s.finish(succeed(j, b"done"), TTL_MS).await.unwrap();
            }
            mine
        }));
    }
    let mut claims: HashMap<String, usize> = HashMap::new();
    let mut per_worker = Vec::new();
    for w in workers {
        let mine = w.await.unwrap();
        per_worker.push(mine.len());
        for id in mine {
            *claims.entry(id).or_default() += 1;
        }
    }
    assert_eq!(claims.len(), 50, "every job claimed");
    assert!(
        claims.values().all(|n| *n == 1),
        "no job claimed twice: {claims:?}"
    );
    assert!(submitted.iter().all(|id| claims.contains_key(id)));
    assert_eq!(per_worker.iter().sum::<usize>(), 50);
    let counts = other.counts().await;
    assert_eq!(count(&counts, ROUTE, JobState::Succeeded), 50);
    assert_eq!(count(&counts, ROUTE, JobState::Queued), 0);
    assert_eq!(count(&counts, ROUTE, JobState::Running), 0);
}

#[tokio::test]
async fn a_job_whose_worker_stops_heartbeating_is_taken_over_after_the_lease() {
    let lease = Duration::from_millis(300);
    let Some((server, l2, a)) = setup(lease).await else {
        return;
    };
    let b = RedisStore::new(self::l2(&server, &prefix_of(&l2)).await, lease);
    let submitted = submit_new(&a, job(ROUTE, "slow")).await;
    let held = a.claim(ROUTE).await.unwrap().unwrap();
    assert_eq!(held.attempts, 1);

    // While A heartbeats, B gets nothing, well past the lease.
    let until = Instant::now() + lease * 3;
    while Instant::now() < until {
        a.heartbeat(&held).await.unwrap();
        assert!(
            b.claim(ROUTE).await.unwrap().is_none(),
            "a heartbeating job is not taken over"
        );
        tokio::time::sleep(lease / 4).await;
    }

    // A stops: after the lease B takes the same job over, attempt counted.
    let started = Instant::now();
    let taken = claim_eventually(&b, "B to take the job over").await;
    assert!(
        started.elapsed() >= lease / 2,
        "not before the lease ran out"
    );
    assert_eq!(taken.id, submitted.id);
    assert_eq!(taken.state, JobState::Running);
    assert_eq!(taken.attempts, 2);
    // A has lost it; B holds it.
    assert!(matches!(
        a.heartbeat(&held).await,
        Err(StoreError::WrongState("running"))
    ));
    b.heartbeat(&taken).await.unwrap();
    assert_eq!(count(&a.counts().await, ROUTE, JobState::Running), 1);
    b.finish(succeed(taken, b"late"), TTL_MS).await.unwrap();
    assert!(a.claim(ROUTE).await.unwrap().is_none());
    assert!(b.claim(ROUTE).await.unwrap().is_none());
    assert_eq!(b.get(&submitted.id).await.unwrap().unwrap().attempts, 2);
}

#[tokio::test]
async fn a_delayed_retry_is_claimable_only_when_due() {
    let Some((_server, _l2, store)) = setup(Duration::from_secs(30)).await else {
        return;
    };
    let submitted = submit_new(&store, job(ROUTE, "flaky")).await;
    let mut first = store.claim(ROUTE).await.unwrap().unwrap();
    first.state = JobState::Queued;
    first.last_error = Some("upstream 503".into());
    let delay = Duration::from_millis(300);
    let retry_at = Instant::now() + delay;
    first.next_attempt_ms = perfgate_jobs::job::now_ms() + 300;
    store.finish(first, TTL_MS).await.unwrap();
    assert!(
        store.claim(ROUTE).await.unwrap().is_none(),
        "not before its backoff"
    );
    let waiting = store.get(&submitted.id).await.unwrap().unwrap();
    assert_eq!(waiting.state, JobState::Queued);
    assert_eq!(count(&store.counts().await, ROUTE, JobState::Queued), 1);

    let again = claim_eventually(&store, "the retry to be claimable").await;
    assert!(
        Instant::now() >= retry_at - Duration::from_millis(50),
        "claimed before it was due"
    );
    assert_eq!(again.id, submitted.id);
    assert_eq!(again.attempts, 2);
    assert_eq!(again.last_error.as_deref(), Some("upstream 503"));

    // A retry due at once goes straight back to the stream.
    let mut now_retry = again;
    now_retry.state = JobState::Queued;
    now_retry.next_attempt_ms = 0;
    store.finish(now_retry, TTL_MS).await.unwrap();
    assert_eq!(store.claim(ROUTE).await.unwrap().unwrap().attempts, 3);
}

#[tokio::test]
async fn submissions_past_max_queued_are_refused() {
    let Some((_server, _l2, store)) = setup(Duration::from_secs(30)).await else {
        return;
    };
    store.submit(job(ROUTE, "1"), 3).await.unwrap();
    store.submit(job("other", "2"), 3).await.unwrap();
    let running = {
        store.submit(job(ROUTE, "3"), 3).await.unwrap();
        store.claim(ROUTE).await.unwrap().unwrap()
    };
    // Queued and running jobs over all routes count.
    assert!(matches!(
        store.submit(job("other", "4"), 3).await,
        Err(StoreError::Full(3))
    ));
    assert!(matches!(
        store.submit(job(ROUTE, "4"), 3).await,
        Err(StoreError::Full(3))
    ));
    store.finish(succeed(running, b""), TTL_MS).await.unwrap();
    submit_new_bounded(&store, job("other", "5"), 3).await;
    assert!(matches!(
        store.submit(job(ROUTE, "6"), 3).await,
        Err(StoreError::Full(3))
    ));
}

async fn submit_new_bounded(store: &RedisStore, j: Job, max: usize) {
    assert!(matches!(
        store.submit(j, max).await.unwrap(),
        Submitted::New(_)
    ));
}

#[tokio::test]
async fn requeue_and_discard_follow_the_state_rules() {
    let Some((_server, _l2, store)) = setup(Duration::from_secs(30)).await else {
        return;
    };
    let queued = submit_new(&store, with_dedup(job(ROUTE, "q"), "q")).await;
    assert!(matches!(
        store.requeue(&queued.id).await,
        Err(StoreError::WrongState("queued"))
    ));
    assert!(matches!(
        store.discard(&queued.id).await,
        Err(StoreError::WrongState("queued"))
    ));
    let running = store.claim(ROUTE).await.unwrap().unwrap();
    assert!(matches!(
        store.requeue(&running.id).await,
        Err(StoreError::WrongState("running"))
    ));
    assert!(matches!(
        store.discard(&running.id).await,
        Err(StoreError::WrongState("running"))
    ));

    // Dead → requeue: queued again with fresh attempts, claimable.
    let mut dead = terminal(running, JobState::Dead);
    dead.attempts = 5;
    store.finish(dead, TTL_MS).await.unwrap();
    let requeued = store.requeue(&queued.id).await.unwrap();
    assert_eq!((requeued.state, requeued.attempts), (JobState::Queued, 0));
    let stored = store.get(&queued.id).await.unwrap().unwrap();
    assert_eq!((stored.state, stored.attempts), (JobState::Queued, 0));
    let again = store.claim(ROUTE).await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.attempts), (queued.id.as_str(), 1));

    // Succeeded: neither requeued nor kept when discarded.
    store.finish(succeed(again, b"r"), TTL_MS).await.unwrap();
    assert!(matches!(
        store.requeue(&queued.id).await,
        Err(StoreError::WrongState("succeeded"))
    ));
    store.discard(&queued.id).await.unwrap();
    assert!(store.get(&queued.id).await.unwrap().is_none());
    assert!(matches!(
        store.discard(&queued.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.requeue(&queued.id).await,
        Err(StoreError::NotFound)
    ));
    // Its de-duplication mapping went with it.
    submit_new(&store, with_dedup(job(ROUTE, "q"), "q")).await;

    // Failed → requeue works too.
    let failed = store.claim(ROUTE).await.unwrap().unwrap();
    store
        .finish(terminal(failed.clone(), JobState::Failed), TTL_MS)
        .await
        .unwrap();
    assert_eq!(
        store.requeue(&failed.id).await.unwrap().state,
        JobState::Queued
    );
    let c = store.counts().await;
    assert_eq!(count(&c, ROUTE, JobState::Queued), 1);
    assert_eq!(count(&c, ROUTE, JobState::Failed), 0);
    assert_eq!(count(&c, ROUTE, JobState::Succeeded), 0);
}

#[tokio::test]
async fn counts_and_lists_follow_the_states_and_expiry() {
    let Some((_server, _l2, store)) = setup(Duration::from_secs(30)).await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(submit_new(&store, job(ROUTE, &format!("{i}"))).await.id);
    }
    submit_new(&store, job("other", "x")).await;
    let a = store.claim(ROUTE).await.unwrap().unwrap();
    let b = store.claim(ROUTE).await.unwrap().unwrap();
    let c = store.claim(ROUTE).await.unwrap().unwrap();
    store
        .finish(succeed(a.clone(), b"a"), TTL_MS)
        .await
        .unwrap();
    store
        .finish(terminal(b.clone(), JobState::Failed), 150)
        .await
        .unwrap();

    let counts = store.counts().await;
    assert_eq!(count(&counts, ROUTE, JobState::Queued), 1);
    assert_eq!(count(&counts, ROUTE, JobState::Running), 1);
    assert_eq!(count(&counts, ROUTE, JobState::Succeeded), 1);
    assert_eq!(count(&counts, ROUTE, JobState::Failed), 1);
    assert_eq!(count(&counts, "other", JobState::Queued), 1);

    let queued = store.list(JobState::Queued, 10).await.unwrap();
    assert_eq!(queued.len(), 2, "one per route");
    assert!(queued.iter().all(|j| j.state == JobState::Queued));
    assert_eq!(store.list(JobState::Queued, 1).await.unwrap().len(), 1);
    let running = store.list(JobState::Running, 10).await.unwrap();
    assert_eq!(running.iter().map(|j| &j.id).collect::<Vec<_>>(), [&c.id]);
    assert!(store.list(JobState::Dead, 10).await.unwrap().is_empty());

    // The failed job's result_ttl (150 ms) runs out: it is gone and uncounted.
    eventually_async("the failed job to expire", PATIENCE, || async {
        count(&store.counts().await, ROUTE, JobState::Failed) == 0
    })
    .await;
    assert!(store.get(&b.id).await.unwrap().is_none());
    assert!(store.list(JobState::Failed, 10).await.unwrap().is_empty());
    assert_eq!(count(&store.counts().await, ROUTE, JobState::Succeeded), 1);
    assert!(store.get(&a.id).await.unwrap().is_some());
}

#[tokio::test]
async fn calls_fail_as_unavailable_when_redis_is_away() {
    let l2 = L2::start(&RedisConfig {
        url: "redis://127.0.0.1:1".into(),
        ..RedisConfig::default()
    })
    .unwrap();
    let store = RedisStore::new(l2, Duration::from_secs(1));
    assert!(matches!(
        store.submit(job(ROUTE, "x"), MAX).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.claim(ROUTE).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.get("0123456789abcdef0123456789abcdef").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(store.counts().await.by_route.is_empty());
}

#[tokio::test]
async fn every_operation_works_on_redis_cluster() {
    let Some(cluster) = RedisCluster::start() else {
        eprintln!("SKIPPED: redis-server is not available for a cluster");
        return;
    };
    let cfg = RedisConfig {
        cluster: cluster.nodes(),
        timeout: perfgate_config::Duration(Duration::from_millis(500)),
        retry_after: perfgate_config::Duration::from_millis(100),
        key_prefix: unique_name("jobs"),
        ..RedisConfig::default()
    };
    let l2 = L2::start(&cfg).unwrap();
    eventually_async("the cluster L2 to connect", PATIENCE, || async {
        l2.health().state == "up"
    })
    .await;
    assert_eq!(l2.health().mode, "cluster");
    let store = RedisStore::new(l2, Duration::from_millis(200));
    // Enough routes to spread over the three masters.
    let routes: Vec<String> = (0..6).map(|i| format!("route-{i}")).collect();
    let mut ids = Vec::new();
    for r in &routes {
        let j = submit_new(&store, with_dedup(job(r, r), r)).await;
        assert!(matches!(
            store.submit(with_dedup(job(r, r), r), MAX).await.unwrap(),
            Submitted::Duplicate(_)
        ));
        ids.push(j.id);
    }
    assert!(matches!(
        store.submit(job(&routes[0], "x"), 6).await,
        Err(StoreError::Full(6))
    ));
    for (r, id) in routes.iter().zip(&ids) {
        assert_eq!(store.get(id).await.unwrap().unwrap().route, *r);
        let mut j = store.claim(r).await.unwrap().unwrap();
        assert_eq!(&j.id, id);
        store.heartbeat(&j).await.unwrap();
        // A delayed retry, then a takeover of the abandoned attempt.
        j.state = JobState::Queued;
        j.next_attempt_ms = perfgate_jobs::job::now_ms() + 50;
        store.finish(j, TTL_MS).await.unwrap();
        let deadline = Instant::now() + PATIENCE;
        let again = loop {
            if let Some(j) = store.claim(r).await.unwrap() {
                break j;
            }
            assert!(
                Instant::now() < deadline,
                "the retry never came back on {r}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let deadline = Instant::now() + PATIENCE;
        let taken = loop {
            if let Some(j) = store.claim(r).await.unwrap() {
                break j;
            }
            assert!(Instant::now() < deadline, "no takeover on {r}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            (taken.id.as_str(), again.attempts, taken.attempts),
            (id.as_str(), 2, 3)
        );
        store
            .finish(terminal(taken, JobState::Dead), TTL_MS)
            .await
            .unwrap();
    }
    let counts = store.counts().await;
    for r in &routes {
        assert_eq!(count(&counts, r, JobState::Dead), 1, "{r}");
        assert_eq!(count(&counts, r, JobState::Running), 0, "{r}");
    }
    assert_eq!(store.list(JobState::Dead, 100).await.unwrap().len(), 6);
    store.requeue(&ids[0]).await.unwrap();
    store.discard(&ids[1]).await.unwrap();
    assert!(store.get(&ids[1]).await.unwrap().is_none());
    let counts = store.counts().await;
    assert_eq!(count(&counts, &routes[0], JobState::Queued), 1);
    assert_eq!(count(&counts, &routes[1], JobState::Dead), 0);
}
