//! The real `perfgate` binary as a child process (the integration test
//! passes `env!("CARGO_BIN_EXE_perfgate")`).

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port that was free a moment ago (bind `127.0.0.1:0`, read, drop).
/// Another process may take it before it is used: callers retry.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Builds a `perfgate serve` child process.
#[must_use = "call spawn() to start it"]
pub struct BinaryBuilder {
    exe: PathBuf,
    upstream: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl BinaryBuilder {
    /// `--upstream http://<addr>`.
    pub fn upstream(mut self, addr: SocketAddr) -> Self {
        self.upstream = Some(format!("http://{addr}"));
        self
    }

    /// An extra command-line argument after `serve`.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// An environment variable of the child.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Starts `perfgate serve` on free ports (retrying on a collision) and
    /// waits until the admin `/health` answers.
    pub async fn spawn(self) -> Binary {
        let mut last = String::new();
        for _ in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let admin_addr: SocketAddr =
                format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let mut cmd = Command::new(&self.exe);
            cmd.arg("serve")
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--admin-listen")
                .arg(admin_addr.to_string());
            if let Some(u) = &self.upstream {
                cmd.arg("--upstream").arg(u);
            }
            cmd.args(&self.args)
                .env("PERFGATE_LOG", "warn")
                // No log store in the test's working directory (a test can
                // turn it on again through `env`).
                .env("PERFGATE_LOGS__STORE", "false")
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("spawn perfgate");
            let stderr = Arc::new(Mutex::new(String::new()));
            if let Some(mut pipe) = child.stderr.take() {
                let sink = stderr.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = pipe.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if let Ok(mut s) = sink.lock() {
                            s.push_str(&String::from_utf8_lossy(&buf[..n]));
                        }
                    }
                });
            }
            let mut bin = Binary {
                child,
                addr,
                admin_addr,
                stderr,
            };
            let deadline = Instant::now() + crate::PATIENCE;
            loop {
                if let Ok(Some(status)) = bin.child.try_wait() {
                    // Give the reader thread a moment to collect the message.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    last = format!("perfgate exited early ({status}):\n{}", bin.stderr());
                    break;
                }
                let up = tokio::net::TcpStream::connect(admin_addr).await.is_ok()
                    && crate::raw::raw_timeout(
                        admin_addr,
                        "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                        Duration::from_secs(2),
                    )
                    .await
                    .starts_with("HTTP/1.1 200");
                if up && tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return bin;
                }
                assert!(
                    Instant::now() < deadline,
                    "perfgate did not become ready within {:?}:\n{}",
                    crate::PATIENCE,
                    bin.stderr()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !last.contains("cannot listen") {
                break;
            }
        }
        panic!("{last}");
    }
}

/// A running `perfgate serve` child, killed on drop.
pub struct Binary {
    child: Child,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Binary {
    /// `perfgate serve` from the executable at `exe`.
    pub fn builder(exe: impl Into<PathBuf>) -> BinaryBuilder {
        BinaryBuilder {
            exe: exe.into(),
            upstream: None,
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Proxy address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// `http://<proxy addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmHWM`, `VmRSS`), Linux only.
    pub fn proc_status_kib(&self, field: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    /// Sends SIGTERM (with `kill -TERM`).
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`TERM`, `HUP`, `KILL`) with `kill`.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} {} failed", self.pid());
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for the child to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
