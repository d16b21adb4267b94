//! Real `redis-server` processes for tests: a standalone server that can be
//! killed and restarted on the same port, and a 3-master Redis Cluster.
//! Each runs in its own temporary directory on an ephemeral port.
//!
//! When `redis-server` is not installed, [`RedisServer::start`] returns
//! `None` and the test says it was skipped — except under CI (`CI` set),
//! where a missing Redis is a failure: CI must never skip these tests.
//! `scripts/test.sh` installs Redis when it is missing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::binary::free_port;
use crate::util::TempDir;

fn installed() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed; CI must run the Redis tests (scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED: redis-server is not installed (run scripts/test.sh to install it)");
    }
    found
}

fn spawn(port: u16, dir: &TempDir, extra: &[&str]) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn().expect("start redis-server")
}

/// True once `PING` on `port` answers `PONG`.
fn ping(port: u16) -> bool {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "ping"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + crate::PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A standalone `redis-server`.
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port, or `None` when Redis is not installed
    /// (outside CI).
    pub fn start() -> Option<Self> {
        if !installed() {
            return None;
        }
        for _ in 0..5 {
            let port = free_port();
            let dir = TempDir::new();
            let child = spawn(port, &dir, &[]);
            let mut s = Self {
                port,
                dir,
                child: Some(child),
            };
            if s.wait_up() {
                return Some(s);
            }
            s.kill();
        }
        panic!("could not start redis-server on a free port");
    }

    fn wait_up(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if ping(self.port) {
                return true;
            }
            if let Some(c) = &mut self.child
                && let Ok(Some(_)) = c.try_wait()
            {
                return false; // exited: port taken
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL): an abrupt outage.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing persisted).
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn(self.port, &self.dir, &[]));
        assert!(
            self.wait_up(),
            "redis-server did not come back on port {}",
            self.port
        );
    }

    /// Runs a `redis-cli` command against the server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of three masters (no replicas).
pub struct RedisCluster {
    ports: Vec<u16>,
    _dirs: Vec<TempDir>,
    children: Vec<Child>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers and creates the cluster, or
    /// `None` when Redis is not installed (outside CI).
    pub fn start() -> Option<Self> {
        if !installed() {
            return None;
        }
        let mut ports = Vec::new();
        let mut dirs = Vec::new();
        let mut children = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let dir = TempDir::new();
            let child = spawn(
                port,
                &dir,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ],
            );
            ports.push(port);
            dirs.push(dir);
            children.push(child);
        }
        for p in &ports {
            wait_until("cluster node to answer PING", || ping(*p));
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        for p in &ports {
            wait_until("cluster_state:ok", || {
                Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            });
        }
        Some(Self {
            ports,
            _dirs: dirs,
            children,
        })
    }

    /// `127.0.0.1:PORT` of each master.
    pub fn nodes(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
