//! The command line: help, and check-config.

use std::process::Command;

use perfgate_test_support::TempDir;

const EXE: &str = env!("CARGO_BIN_EXE_perfgate");

#[test]
fn help_exits_zero() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["demo", "--help"],
        &["check-config", "--help"],
    ] {
        let out = Command::new(EXE).args(args).output().unwrap();
        assert!(out.status.success(), "perfgate {args:?}: {out:?}");
        assert!(!out.stdout.is_empty(), "perfgate {args:?} prints help");
    }
}

#[test]
fn check_config_reports_every_problem_with_its_line() {
    let dir = TempDir::new();
    let file = dir.write(
        "bad.toml",
        r#"[server]
listen = "127.0.0.1:8080"
max_body_bytes = "10XB"

[upstream]
url = "ftp://example.com"

[compression]
gzip_level = 12
"#,
    );
    let out = Command::new(EXE)
        .arg("check-config")
        .arg(&file)
        .env_remove("PERFGATE_UPSTREAM")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let name = file.display().to_string();
    for (line, key) in [
        (3, "server.max_body_bytes"),
        (6, "upstream.url"),
        (9, "compression.gzip_level"),
    ] {
        let expected = format!("{name}:{line}:");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&expected) && l.contains(key)),
            "no `{expected} ... {key}` line in:\n{text}"
        );
    }
}

#[test]
fn check_config_accepts_a_valid_file() {
    let dir = TempDir::new();
    let file = dir.write(
        "good.toml",
        r#"[server]
listen = "127.0.0.1:8080"

[upstream]
url = "http://127.0.0.1:8000"

[[routes]]
path = "/events"
cache = { default_ttl = "30s" }
"#,
    );
    let out = Command::new(EXE)
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok"), "{stdout}");
}
