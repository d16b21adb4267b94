use bytes::Bytes;

use super::*;
use crate::job::{JobRequest, now_ms};

fn dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "perfgate-jobs-{tag}-{}-{}",
        std::process::id(),
        crate::job::new_id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn job(route: &str, priority: i32, dedup: Option<&str>) -> Job {
    let mut j = Job::new(
        route,
        JobRequest {
            method: "POST".into(),
            target: "/work".into(),
            headers: vec![],
            ..JobRequest::default()
        },
        Bytes::from_static(b"{}"),
        now_ms(),
    );
    j.priority = priority;
    j.max_attempts = 3;
    j.dedup = dedup.map(str::to_string);
    j
}

#[tokio::test]
async fn submit_claim_finish_and_read_back() {
    let d = dir("basic");
    let s = Embedded::open(&d).unwrap();
    let Submitted::New(j) = s.submit(job("r", 0, None), 10).await.unwrap() else {
        panic!("new")
    };
    assert_eq!(s.get(&j.id).unwrap().unwrap().state, JobState::Queued);
    let mut c = s.claim("r").await.unwrap().expect("a job");
    assert_eq!(
        (c.id.as_str(), c.state, c.attempts),
        (j.id.as_str(), JobState::Running, 1)
    );
    assert!(s.claim("r").await.unwrap().is_none());
    assert!(s.claim("other").await.unwrap().is_none());
    c.state = JobState::Succeeded;
    c.finished_ms = Some(now_ms());
    c.result_body = Bytes::from_static(b"done");
    s.finish(c, 60_000).await.unwrap();
    let got = s.get(&j.id).unwrap().unwrap();
    assert_eq!(
        (got.state, &got.result_body[..]),
        (JobState::Succeeded, &b"done"[..])
    );
    assert_eq!(s.counts().total(JobState::Succeeded), 1);
    assert_eq!(s.counts().total(JobState::Queued), 0);
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn duplicates_return_the_live_job_then_its_result_and_dead_is_new_work() {
    let d = dir("dedup");
    let s = Embedded::open(&d).unwrap();
    let Submitted::New(first) = s.submit(job("r", 0, Some("k")), 10).await.unwrap() else {
        panic!()
    };
    match s.submit(job("r", 0, Some("k")), 10).await.unwrap() {
        Submitted::Duplicate(j) => assert_eq!(j.id, first.id),
        other => panic!("{other:?}"),
    }
    let mut c = s.claim("r").await.unwrap().unwrap();
    c.state = JobState::Succeeded;
    c.finished_ms = Some(now_ms());
    s.finish(c.clone(), 60_000).await.unwrap();
    match s.submit(job("r", 0, Some("k")), 10).await.unwrap() {
        Submitted::Done(j) => assert_eq!(j.id, first.id),
        other => panic!("{other:?}"),
    }
    // A dead job is no answer.
    let Submitted::New(second) = s.submit(job("r", 0, Some("d")), 10).await.unwrap() else {
        panic!()
    };
    let mut c = s.claim("r").await.unwrap().unwrap();
    assert_eq!(c.id, second.id);
    c.state = JobState::Dead;
    s.finish(c, 60_000).await.unwrap();
    assert!(matches!(
        s.submit(job("r", 0, Some("d")), 10).await.unwrap(),
        Submitted::New(_)
    ));
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn priorities_first_and_the_oldest_is_never_starved() {
    let d = dir("prio");
    let s = Embedded::open(&d).unwrap();
    let Submitted::New(low) = s.submit(job("r", -5, None), 100).await.unwrap() else {
        panic!()
    };
    for _ in 0..20 {
        s.submit(job("r", 0, None), 100).await.unwrap();
    }
    let Submitted::New(high) = s.submit(job("r", 9, None), 100).await.unwrap() else {
        panic!()
    };
    let first = s.claim("r").await.unwrap().unwrap();
    assert_eq!(first.id, high.id, "highest priority first");
    let mut order = Vec::new();
    for _ in 0..5 {
        order.push(s.claim("r").await.unwrap().unwrap().id);
    }
    assert!(
        order.contains(&low.id),
        "the oldest (lowest) job runs within five claims"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn full_queue_refuses_and_retries_wait_for_their_time() {
    let d = dir("full");
    let time = perfgate_runtime::clock::ManualClock::new();
    let s = Embedded::open_with_clock(&d, time.clock()).unwrap();
    s.submit(job("r", 0, None), 2).await.unwrap();
    s.submit(job("r", 0, None), 2).await.unwrap();
    assert!(matches!(
        s.submit(job("r", 0, None), 2).await,
        Err(StoreError::Full(2))
    ));
    let mut c = s.claim("r").await.unwrap().unwrap();
    c.state = JobState::Queued;
    c.next_attempt_ms = time.clock().unix_ms() + 300;
    let id = c.id.clone();
    s.finish(c, 60_000).await.unwrap();
    let other = s.claim("r").await.unwrap().unwrap();
    assert_ne!(other.id, id, "the retry is not due yet");
    assert!(s.claim("r").await.unwrap().is_none());
    time.advance(Duration::from_millis(500));
    let again = s.claim("r").await.unwrap().expect("due now");
    assert_eq!((again.id.as_str(), again.attempts), (id.as_str(), 2));
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn reopening_puts_running_jobs_back_and_requeue_rules_hold() {
    let d = dir("reopen");
    {
        let s = Embedded::open(&d).unwrap();
        s.submit(job("r", 0, None), 10).await.unwrap();
        s.claim("r").await.unwrap().unwrap();
        assert_eq!(s.counts().total(JobState::Running), 1);
        // Dropping the handle stops the writer; the file stays.
        drop(s);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let s = Embedded::open(&d).unwrap();
    assert_eq!(s.counts().total(JobState::Queued), 1);
    let mut c = s.claim("r").await.unwrap().expect("resumed");
    assert_eq!(c.attempts, 2);
    assert!(matches!(
        s.requeue(&c.id).await,
        Err(StoreError::WrongState("running"))
    ));
    assert!(matches!(
        s.discard(&c.id).await,
        Err(StoreError::WrongState(_))
    ));
    c.state = JobState::Dead;
    s.finish(c.clone(), 60_000).await.unwrap();
    assert_eq!(s.list(JobState::Dead, 10).unwrap().len(), 1);
    let back = s.requeue(&c.id).await.unwrap();
    assert_eq!((back.state, back.attempts), (JobState::Queued, 0));
    let mut c = s.claim("r").await.unwrap().unwrap();
    c.state = JobState::Dead;
    s.finish(c.clone(), 60_000).await.unwrap();
    s.discard(&c.id).await.unwrap();
    assert!(s.get(&c.id).unwrap().is_none());
    assert!(matches!(s.discard(&c.id).await, Err(StoreError::NotFound)));
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn a_failed_job_is_never_an_answer_to_a_new_submission() {
    let d = dir("failed");
    let s = Embedded::open(&d).unwrap();
    let Submitted::New(first) = s.submit(job("r", 0, Some("k")), 10).await.unwrap() else {
        panic!()
    };
    let mut c = s.claim("r").await.unwrap().unwrap();
    c.state = JobState::Failed;
    c.finished_ms = Some(now_ms());
    c.result_body = Bytes::from_static(b"{\"error\":\"bad token\"}");
    s.finish(c, 60_000).await.unwrap();
    let Submitted::New(second) = s.submit(job("r", 0, Some("k")), 10).await.unwrap() else {
        panic!("a failed (4xx) result must not be reused")
    };
    assert_ne!(second.id, first.id);
    // The failed job itself is still readable by its id.
    assert_eq!(s.get(&first.id).unwrap().unwrap().state, JobState::Failed);
    let _ = std::fs::remove_dir_all(&d);
}

#[cfg(unix)]
#[test]
fn the_store_file_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir("mode");
    let _s = Embedded::open(&d).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.join("jobs.redb")), 0o600);
    assert_eq!(mode(&d) & 0o022, 0, "the directory is writable by others");
    drop(_s);
    let _ = std::fs::remove_dir_all(&d);

    // An existing world-writable directory is refused.
    let d = dir("open-dir");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = Embedded::open(&d).err().expect("refused");
    assert!(err.to_string().contains("writable"), "{err}");
    // A file made by an older version with a wider mode is narrowed.
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(d.join("jobs.redb"), b"").unwrap();
    std::fs::set_permissions(d.join("jobs.redb"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let _s = Embedded::open(&d).unwrap();
    assert_eq!(mode(&d.join("jobs.redb")), 0o600);
    let _ = std::fs::remove_dir_all(&d);
}
