//! Loader, override and validation tests across modules.

use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::load::schema_check::schema_paths;
use crate::*;

const NO_ENV: [(&str, &str); 0] = [];

fn errors(text: &str) -> ConfigErrors {
    match load_str(text, "perfgate.toml", NO_ENV) {
        Ok(c) => panic!("expected problems, loaded {c:?}"),
        Err(e) => e,
    }
}

fn env_errors(text: &str, env: &[(&str, &str)]) -> ConfigErrors {
    match load_str(text, "perfgate.toml", env.iter().copied()) {
        Ok(c) => panic!("expected problems, loaded {c:?}"),
        Err(e) => e,
    }
}

fn load_ok(text: &str, env: &[(&str, &str)]) -> Config {
    load_str(text, "perfgate.toml", env.iter().copied()).unwrap_or_else(|e| panic!("{e}"))
}

fn at(p: &Problem) -> Option<(usize, usize)> {
    match &p.origin {
        Origin::File { position, .. } => *position,
        _ => None,
    }
}

fn find<'a>(e: &'a ConfigErrors, path: &str) -> &'a Problem {
    e.problems
        .iter()
        .find(|p| p.path == path)
        .unwrap_or_else(|| panic!("no problem at {path} in:\n{e}"))
}

#[test]
fn several_mistakes_all_reported_with_lines() {
    let text = r#"[server]
listen = "0.0.0.0:8080"
max_body_bytes = "10XB"
lisen = "x"

[upstream]
url = "https://example.com"
connect_timeout = "0s"

[compression]
algorithms = ["br", "lz4"]
gzip_level = 12

[[routes]]
path = "/a"

[[routes]]
name = "b"
path = "/b"
[routes.cache]
default_ttl = "10x"
authorized = "everyone"
"#;
    let e = errors(text);
    let expect = [
        (
            "server.max_body_bytes",
            3,
            "invalid size \"10XB\": unit \"XB\"",
        ),
        ("server.lisen", 4, "did you mean `listen`?"),
        ("upstream.url", 7, "https upstreams are not supported yet"),
        ("upstream.connect_timeout", 8, "must be greater than 0"),
        ("compression.algorithms[1]", 11, "unknown algorithm \"lz4\""),
        ("compression.gzip_level", 12, "out of range"),
        (
            "routes[1].cache.default_ttl",
            21,
            "invalid duration \"10x\"",
        ),
        ("routes[1].cache.authorized", 22, "expected one of"),
    ];
    for (path, line, reason) in expect {
        let p = find(&e, path);
        assert_eq!(at(p).map(|(l, _)| l), Some(line), "{p}");
        assert!(p.reason.contains(reason), "{p}");
    }
    assert_eq!(e.problems.len(), expect.len(), "{e}");
    // File order, one per line.
    let lines: Vec<usize> = e
        .problems
        .iter()
        .filter_map(|p| at(p).map(|a| a.0))
        .collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
    assert_eq!(e.to_string().lines().count(), expect.len());
}

#[test]
fn display_format() {
    let text = "[upstream]\nurl = \"http://u\"\n\n[[routes]]\npath = \"/a\"\n\n[[routes]]\npath = \"/b\"\ncache.default_ttl = \"10x\"\n";
    let e = errors(text);
    assert_eq!(
        e.to_string(),
        "perfgate.toml:9:7: routes[1].cache.default_ttl: invalid duration \"10x\": unit \"x\" is not one of ms, s, m, h or d"
    );
    let e = errors(
        "[upstream]\nurl = \"http://u\"\n[[routes]]\npath = \"/a\"\n\n[[routes]]\n[routes.cache]\ndefault_ttl = \"10x\"\n",
    );
    assert_eq!(
        e.to_string(),
        "perfgate.toml:6:1: routes[1].path: a route needs either path or pattern\n\
         perfgate.toml:8:1: routes[1].cache.default_ttl: invalid duration \"10x\": unit \"x\" is not one of ms, s, m, h or d"
    );
    let p = Problem::new("server.listen", "bad");
    assert_eq!(p.to_string(), "server.listen: bad");
    let p = Problem {
        origin: Origin::Env {
            var: "PERFGATE_SERVER__LISTEN".into(),
        },
        ..p
    };
    assert_eq!(p.to_string(), "PERFGATE_SERVER__LISTEN: server.listen: bad");
}

#[test]
fn syntax_error_is_one_problem_with_position() {
    let e = errors("[server]\nlisten = \"a\"\nhttp2 = tru\n");
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(at(&e.problems[0]).map(|a| a.0), Some(3), "{e}");
    assert!(e.to_string().starts_with("perfgate.toml:3:"), "{e}");
}

#[test]
fn wrong_types_reported() {
    let e = errors(
        "server = 5\n[upstream]\nurl = \"http://u\"\npool_max_idle = -1\npreserve_host = \"yes\"\n[cache]\ndrop_query_params = [\"a\", 3]\n",
    );
    assert!(
        find(&e, "server").reason.contains("expected a table"),
        "{e}"
    );
    assert_eq!(at(find(&e, "upstream.pool_max_idle")).map(|a| a.0), Some(4));
    assert_eq!(at(find(&e, "upstream.preserve_host")).map(|a| a.0), Some(5));
    assert!(
        find(&e, "cache.drop_query_params[1]")
            .reason
            .contains("integer 3"),
        "{e}"
    );
    assert_eq!(e.problems.len(), 4, "{e}");
}

#[test]
fn defaults_with_upstream_are_clean() {
    let c = load_ok("[upstream]\nurl = \"http://127.0.0.1:8000\"\n", &[]);
    let mut expected = Config::default();
    expected.upstream.url = "http://127.0.0.1:8000".into();
    assert_eq!(c, expected);
    assert_eq!(validate(&expected), vec![]);
}

#[test]
fn no_upstream_at_all() {
    let e = errors("");
    assert_eq!(
        e.to_string(),
        "perfgate.toml: upstream.url: no upstream: set upstream.url or pass --upstream"
    );
    let e = match from_env_only(NO_ENV) {
        Ok(c) => panic!("{c:?}"),
        Err(e) => e,
    };
    assert_eq!(
        e.to_string(),
        "upstream.url: no upstream: set upstream.url or pass --upstream"
    );
}

#[test]
fn routes_with_own_upstreams_need_no_default() {
    load_ok(
        "[[routes]]\npath = \"/a\"\nupstream = \"http://a:1\"\n",
        &[],
    );
    let e = errors(
        "[[routes]]\npath = \"/a\"\nupstream = \"http://a:1\"\n[[routes]]\npattern = \"/b/{id}\"\n",
    );
    let p = find(&e, "routes[1].upstream");
    assert_eq!(at(p), Some((4, 1)), "{p}");
}

#[test]
fn env_overrides_nested_values_lists_and_routes() {
    let text = "[upstream]\nurl = \"http://u\"\n[[routes]]\npath = \"/a\"\n";
    let env = [
        ("PERFGATE_SERVER__LISTEN", "0.0.0.0:8081"),
        ("PERFGATE_CACHE__MAX_BYTES", "1GiB"),
        ("PERFGATE_COMPRESSION__ALGORITHMS", "br, gzip"),
        ("PERFGATE_COMPRESSION__GZIP_LEVEL", "9"),
        ("PERFGATE_SERVER__HTTP2", "false"),
        ("PERFGATE_ROUTES__0__UPSTREAM", "http://a:1"),
        ("PERFGATE_ROUTES__0__CACHE__DEFAULT_TTL", "30s"),
        ("PERFGATE_ROUTES__1__PATTERN", "/b/*"),
        ("PERFGATE_ROUTES__1__METHODS", "POST"),
        ("PERFGATE_ROUTES__1__CACHE__BYPASS", "true"),
        ("PERFGATE_SERVER__TLS__CERT_FILE", "Cargo.toml"),
        ("PERFGATE_SERVER__TLS__KEY_FILE", "Cargo.toml"),
        ("PERFGATE_FORWARDED__TRUSTED_PROXIES", ""),
        // Reserved for the CLI, and unrelated variables: ignored.
        ("PERFGATE_UPSTREAM", "nonsense"),
        ("PERFGATE_ADMIN_TOKEN", "secret"),
        ("PERFGATE_LOG", "debug"),
        ("PERFGATE_SOMETHING", "x"),
        ("HOME", "/root"),
    ];
    let c = load_ok(text, &env);
    assert_eq!(c.server.listen, "0.0.0.0:8081");
    assert!(!c.server.http2);
    assert_eq!(c.cache.max_bytes, ByteSize(1 << 30));
    assert_eq!(c.compression.algorithms, ["br", "gzip"]);
    assert_eq!(c.compression.gzip_level, 9);
    assert_eq!(c.routes.len(), 2);
    assert_eq!(c.routes[0].path.as_deref(), Some("/a"));
    assert_eq!(c.routes[0].upstream.as_deref(), Some("http://a:1"));
    assert_eq!(c.routes[0].cache.default_ttl, Some(Duration::from_secs(30)));
    assert_eq!(c.routes[1].pattern.as_deref(), Some("/b/*"));
    assert_eq!(c.routes[1].methods, ["POST"]);
    assert!(c.routes[1].cache.bypass);
    assert!(c.forwarded.trusted_proxies.is_empty());
    assert!(c.server.tls.is_some());
    // The environment alone.
    let c =
        from_env_only([("PERFGATE_UPSTREAM__URL", "http://x:9")]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.upstream.url, "http://x:9");
}

#[test]
fn env_problems_name_the_variable() {
    let text = "[upstream]\nurl = \"http://u\"\n";
    let e = env_errors(
        text,
        &[
            ("PERFGATE_SERVER__LISTN", "x"),
            ("PERFGATE_CACHE__MAX_BYTES", "lots"),
            ("PERFGATE_SERVER__HTTP2", "yes"),
            ("PERFGATE_ROUTES__X__PATH", "/a"),
            ("PERFGATE_SERVER", "x"),
            ("PERFGATE_SERVER__TLS", "x"),
            ("PERFGATE_ADMIN__LISTEN", "nowhere"),
            ("PERFGATE_ROUTES__2__PATH", "/z"),
        ],
    );
    let var = |p: &Problem| match &p.origin {
        Origin::Env { var } => var.clone(),
        other => panic!("{p} from {other:?}"),
    };
    let p = find(&e, "server.listn");
    assert_eq!(var(p), "PERFGATE_SERVER__LISTN");
    assert!(p.reason.contains("did you mean `listen`?"), "{p}");
    assert_eq!(
        var(find(&e, "cache.max_bytes")),
        "PERFGATE_CACHE__MAX_BYTES"
    );
    assert_eq!(var(find(&e, "server.http2")), "PERFGATE_SERVER__HTTP2");
    assert_eq!(var(find(&e, "routes")), "PERFGATE_ROUTES__X__PATH");
    assert_eq!(var(find(&e, "server.tls")), "PERFGATE_SERVER__TLS");
    assert_eq!(var(find(&e, "admin.listen")), "PERFGATE_ADMIN__LISTEN");
    // Routes 0 and 1 were created empty to reach index 2 and have no path;
    // route 2 has no upstream... but the default one exists, so only the
    // missing paths are reported, at the variable that created the routes.
    assert_eq!(var(find(&e, "routes[0].path")), "PERFGATE_ROUTES__2__PATH");
    assert_eq!(e.problems.len(), 8, "{e}");
    assert!(
        e.to_string()
            .contains("PERFGATE_SERVER__LISTN: server.listn: no such setting"),
        "{e}"
    );
}

#[test]
fn semantic_checks() {
    let text = r#"
[server]
listen = "localhost:80"
via_name = "a b"
[server.tls]
cert_file = ""
key_file = "/does/not/exist.pem"
[admin]
listen = "127.0.0.1:9090"
[upstream]
url = "http://u"
[forwarded]
trusted_proxies = ["10.0.0.0/8", "10.0.0.1/8", "nope"]
trusted_headers = ["X-Forwarded-Host", "cookie"]
[cache]
max_bytes = "1MiB"
max_object_bytes = "2MiB"
[compression]
algorithms = ["gzip", "gzip"]
brotli_level = 12
zstd_level = 0
[[routes]]
name = "x"
path = "/a"
pattern = "/a/{id}"
methods = ["get", "GET", "GET", "BAD METHOD"]
[[routes]]
name = "x"
path = "no-slash"
upstream = "ftp://x"
[[routes]]
pattern = "/a/*/b"
"#;
    let e = errors(text);
    for path in [
        "server.listen",
        "server.via_name",
        "server.tls.cert_file",
        "server.tls.key_file",
        "forwarded.trusted_proxies[1]",
        "forwarded.trusted_proxies[2]",
        "forwarded.trusted_headers[1]",
        "cache.max_object_bytes",
        "compression.algorithms[1]",
        "compression.brotli_level",
        "compression.zstd_level",
        "routes[0].pattern",
        "routes[0].methods[0]",
        "routes[0].methods[2]",
        "routes[0].methods[3]",
        "routes[1].name",
        "routes[1].path",
        "routes[1].upstream",
        "routes[2].pattern",
    ] {
        let p = find(&e, path);
        assert!(at(p).is_some(), "{p}");
    }
    assert_eq!(e.problems.len(), 19, "{e}");
    assert!(find(&e, "routes[0].methods[0]").reason.contains("\"GET\""));
    assert!(
        find(&e, "server.tls.key_file")
            .reason
            .contains("/does/not/exist.pem")
    );
}

#[test]
fn same_listen_for_admin_and_server() {
    let e = errors(
        "[server]\nlisten = \"127.0.0.1:1\"\n[admin]\nlisten = \"127.0.0.1:1\"\n[upstream]\nurl = \"http://u\"\n",
    );
    assert_eq!(at(find(&e, "admin.listen")), Some((4, 1)));
}

#[test]
fn unreadable_file() {
    let e = match load_file_with_env(std::path::Path::new("/no/such/perfgate.toml"), NO_ENV) {
        Ok(c) => panic!("{c:?}"),
        Err(e) => e,
    };
    assert!(
        e.to_string()
            .starts_with("/no/such/perfgate.toml: cannot read"),
        "{e}"
    );
}

#[test]
fn example_file_loads_clean() {
    let text = include_str!("../../../docs/config.example.toml");
    let c = load_ok(text, &[]);
    // The example shows every default: apart from the upstream and the
    // routes it must equal the defaults.
    let mut defaults = Config::default();
    defaults.upstream.url = c.upstream.url.clone();
    defaults.routes = c.routes.clone();
    assert_eq!(c, defaults);
    assert_eq!(c.routes.len(), 2);
    assert_eq!(c.routes[0].cache.default_ttl, Some(Duration::from_secs(30)));
    assert!(c.routes[1].cache.bypass);
    assert_eq!(c.routes[1].methods, ["POST"]);
    // And it mentions every setting (commented out or not).
    for path in schema_paths() {
        let key = path.rsplit('.').next().unwrap_or_default();
        assert!(
            text.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{key} ="))
            }),
            "the example does not show {path}"
        );
    }
}

/// The loader's schema and the model must describe the same settings: a
/// field added to model.rs without the schema would be rejected as unknown.
#[test]
fn schema_matches_model() {
    let mut c = Config::default();
    c.server.tls = Some(TlsConfig::default());
    c.admin.token_file = Some(String::new());
    c.upstream.health.path = Some(String::new());
    c.jwt.secret_file = Some(String::new());
    c.jwt.jwks_file = Some(String::new());
    c.cache.coalesce_timeout = Some(Duration::from_secs(1));
    c.jwt
        .forward_claims
        .insert("sub".into(), "X-User-Id".into());
    c.pools.push(PoolConfig {
        servers: vec![PoolServer {
            url: "http://127.0.0.1:1".into(),
            weight: 1,
        }],
        read_pool: Some(String::new()),
        connect_timeout: Some(Duration::from_secs(1)),
        health: c.upstream.health.clone(),
        ..PoolConfig::default()
    });
    c.rate_limits.push(RateLimitConfig {
        burst: Some(1),
        ..RateLimitConfig::default()
    });
    c.routes.push(RouteConfig {
        name: Some(String::new()),
        path: Some(String::new()),
        pattern: Some(String::new()),
        upstream: Some(String::new()),
        pool: Some(String::new()),
        jwt: Some(JwtMode::Required),
        timeouts: RouteTimeouts {
            connect: Some(Duration::from_secs(1)),
            response: Some(Duration::from_secs(1)),
            total: Some(Duration::from_secs(1)),
        },
        query_clamps: vec![QueryClamp {
            param: "page_size".into(),
            min: Some(1),
            max: Some(100),
            default: Some(20),
        }],
        cache: RouteCachePolicy {
            default_ttl: Some(Duration::from_secs(1)),
            stale_while_revalidate: Some(Duration::from_secs(1)),
            stale_if_error: Some(Duration::from_secs(1)),
            ..RouteCachePolicy::default()
        },
        async_job: Some(AsyncRouteConfig {
            upstream_path: Some(String::new()),
            status_path: Some(String::new()),
            batch_path: Some(String::new()),
            ..AsyncRouteConfig::default()
        }),
        ..RouteConfig::default()
    });
    let value = toml::Value::try_from(&c).unwrap_or_else(|e| panic!("{e}"));
    let mut model = BTreeSet::new();
    leaves(&value, "", &mut model);
    let schema: BTreeSet<String> = schema_paths().into_iter().collect();
    assert_eq!(model, schema);
    // And the fully populated tree passes the walk (types agree).
    let text = toml::to_string(&c).unwrap_or_else(|e| panic!("{e}"));
    let e = errors(&text);
    assert!(
        e.problems
            .iter()
            .all(|p| !p.reason.contains("expected") && !p.reason.contains("unknown setting")),
        "{e}"
    );
}

fn leaves(v: &toml::Value, path: &str, out: &mut BTreeSet<String>) {
    match v {
        // A table of the user's names (`jwt.forward_claims`) is one setting.
        toml::Value::Table(t) if path.ends_with("forward_claims") => {
            debug_assert!(!t.is_empty());
            out.insert(path.to_string());
        }
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                leaves(v, &p, out);
            }
        }
        toml::Value::Array(a) if a.first().is_some_and(toml::Value::is_table) => {
            leaves(&a[0], &format!("{path}[0]"), out);
        }
        _ => {
            out.insert(path.to_string());
        }
    }
}

proptest! {
    #[test]
    fn parse_duration_never_panics(s in "\\PC*") {
        let _ = parse_duration(&s);
    }

    #[test]
    fn parse_duration_unitish_never_panics(s in "[0-9]{0,25} ?(ms|s|m|h|d|x|µ)?") {
        if let Ok(d) = parse_duration(&s) {
            prop_assert_eq!(parse_duration(&d.to_string()), Ok(d));
        }
    }

    #[test]
    fn duration_round_trips(ms in any::<u64>()) {
        let d = Duration::from_millis(ms);
        prop_assert_eq!(parse_duration(&d.to_string()), Ok(d));
    }

    #[test]
    fn parse_byte_size_never_panics(s in "\\PC*") {
        let _ = parse_byte_size(&s);
    }

    #[test]
    fn parse_byte_size_unitish_never_panics(s in "[0-9]{0,25} ?(B|K|KiB|MiB|GiB|KB|MB|GB|x|é)?") {
        if let Ok(b) = parse_byte_size(&s) {
            prop_assert_eq!(parse_byte_size(&b.to_string()), Ok(b));
        }
    }

    #[test]
    fn byte_size_round_trips(n in any::<u64>()) {
        let b = ByteSize(n);
        prop_assert_eq!(parse_byte_size(&b.to_string()), Ok(b));
    }

    #[test]
    fn load_str_never_panics(s in "\\PC{0,200}") {
        let _ = load_str(&s, "fuzz.toml", NO_ENV);
    }

    #[test]
    fn env_never_panics(k in "PERFGATE_[A-Z_0-9]{0,30}", v in "\\PC{0,20}") {
        let _ = from_env_only([(k, v)]);
    }
}

#[test]
fn redis_settings_are_checked() {
    let text = r#"
[upstream]
url = "http://u"
[cache]
max_object_bytes = "1MiB"
warmup_concurrency = 0
[redis]
url = "http://r:6379"
cluster = ["a:1", "b", "c:0", "redis://d:1", "[::1]:7000", "[zz]:1"]
timeout = "0s"
retry_after = "0s"
max_object_bytes = "2MiB"
key_prefix = "my app"
max_variants = 0
"#;
    let e = errors(text);
    for path in [
        "cache.warmup_concurrency",
        "redis.url",
        "redis.cluster",
        "redis.cluster[1]",
        "redis.cluster[2]",
        "redis.cluster[3]",
        "redis.cluster[5]",
        "redis.timeout",
        "redis.retry_after",
        "redis.max_object_bytes",
        "redis.key_prefix",
        "redis.max_variants",
    ] {
        let p = find(&e, path);
        assert!(at(p).is_some(), "{p}");
    }
    assert_eq!(e.problems.len(), 12, "{e}");
    assert!(find(&e, "redis.cluster").reason.contains("not both"));
    assert!(find(&e, "redis.cluster[2]").reason.contains("1 to 65535"));
    assert!(
        find(&e, "redis.cluster[3]")
            .reason
            .contains("without a scheme")
    );
    assert!(find(&e, "redis.max_object_bytes").reason.contains("1MiB"));
}

#[test]
fn redis_urls() {
    let base = "[upstream]\nurl = \"http://u\"\n[redis]\n";
    for ok in [
        "redis://127.0.0.1:6379",
        "redis://localhost",
        "redis://:secret@r:6379/0",
        "redis://user:p@ss@r:6379",
        "REDIS://r",
        "redis://[::1]:6379",
    ] {
        load_ok(&format!("{base}url = \"{ok}\"\n"), &[]);
    }
    for bad in [
        "127.0.0.1:6379",
        "redis://",
        "redis://:pw@",
        "redis:///0",
        "redis://r:0",
        "redis://r:65536",
        "redis://r:x",
        "redis://r 1",
        "unix:///tmp/redis.sock",
        // TLS is not supported yet: refused rather than silently in clear.
        "rediss://cache.internal:6380/2",
        "REDISS://r",
    ] {
        let e = errors(&format!("{base}url = \"{bad}\"\n"));
        assert_eq!(find(&e, "redis.url").path, "redis.url", "{bad}");
        assert_eq!(e.problems.len(), 1, "{bad}: {e}");
    }
    // Without Redis, a small cache.max_object_bytes needs no redis change.
    load_ok(
        "[upstream]\nurl = \"http://u\"\n[cache]\nmax_object_bytes = \"64KiB\"\n",
        &[],
    );
    // An empty url is "no L2", and so is an empty cluster list.
    load_ok(&format!("{base}url = \"\"\ncluster = []\n"), &[]);
    load_ok(
        &format!("{base}cluster = [\"10.0.0.1:7000\", \"node-2.redis:7001\"]\n"),
        &[],
    );
}

#[test]
fn redis_from_cli_style_env() {
    let c = load_ok(
        "",
        &[
            ("PERFGATE_UPSTREAM__URL", "http://u"),
            ("PERFGATE_REDIS__CLUSTER", "a:7000,b:7001"),
        ],
    );
    assert_eq!(c.redis.cluster, ["a:7000", "b:7001"]);
    let e = env_errors(
        "",
        &[
            ("PERFGATE_UPSTREAM__URL", "http://u"),
            ("PERFGATE_REDIS__URL", "redis://r"),
            ("PERFGATE_REDIS__CLUSTER", "a:7000"),
        ],
    );
    find(&e, "redis.cluster");
}

#[test]
fn route_tags_and_warmup_concurrency() {
    let e = errors(
        r#"[upstream]
url = "http://u"
[cache]
warmup_concurrency = 65
[[routes]]
path = "/events"
[routes.cache]
tags = ["events", "", "two words"]
invalidate_tags = ["ok", "tab	x"]
"#,
    );
    for path in [
        "cache.warmup_concurrency",
        "routes[0].cache.tags[1]",
        "routes[0].cache.tags[2]",
        "routes[0].cache.invalidate_tags[1]",
    ] {
        let p = find(&e, path);
        assert!(at(p).is_some(), "{p}");
    }
    assert_eq!(e.problems.len(), 4, "{e}");
    assert!(
        find(&e, "cache.warmup_concurrency")
            .reason
            .contains("1 to 64")
    );
    load_ok(
        "[upstream]\nurl = \"http://u\"\n[cache]\nwarmup_concurrency = 64\n[[routes]]\npath = \"/e\"\n[routes.cache]\ntags = [\"events\", \"e:42\"]\ninvalidate_tags = [\"events\"]\n",
        &[],
    );
}

/// Traffic settings: every mistake is reported with its path, and a good
/// pool/limit/JWT setup loads.
#[test]
fn traffic_settings_report_every_problem() {
    let e = errors(
        r#"
[upstream]
url = "http://127.0.0.1:8000"
[upstream.breaker]
failure_rate = 1.5
[[pools]]
name = "api"
servers = [{ url = "ftp://x" , weight = 0 }]
hash_key = "body"
read_pool = "nope"
[[rate_limits]]
name = "login"
key = "cookie:x"
rate = 0
routes = ["missing"]
[[routes]]
path = "/login"
pool = "other"
query_clamps = [{ param = "page_size", min = 10, max = 5 }]
"#,
    );
    let text = e.to_string();
    for needle in [
        "upstream.breaker.failure_rate",
        "pools[0].servers[0].url",
        "pools[0].servers[0].weight",
        "pools[0].hash_key",
        "pools[0].read_pool",
        "rate_limits[0].key",
        "rate_limits[0].rate",
        "rate_limits[0].routes[0]",
        "routes[0].pool",
        "routes[0].query_clamps[0].min",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let c = load_ok(
        r#"
[[pools]]
name = "api"
servers = [{ url = "http://127.0.0.1:8001", weight = 2 }, { url = "http://127.0.0.1:8002" }]
balance = "least-outstanding"
[pools.breaker]
failure_rate = 1
[[rate_limits]]
name = "login-ip"
rate = 5
per = "1m"
routes = ["login"]
[[routes]]
name = "login"
path = "/login"
pool = "api"
"#,
        &[],
    );
    assert_eq!(c.pools[0].servers[1].weight, 1);
    assert_eq!(c.pools[0].balance, Balance::LeastOutstanding);
    assert!((c.pools[0].breaker.failure_rate - 1.0).abs() < f64::EPSILON);
    assert_eq!(c.rate_limits[0].per, Duration::from_secs(60));
}

#[test]
fn job_settings_report_every_problem_with_its_line() {
    let e = errors(
        r#"
[jobs]
backend = "redis"
status_prefix = "jobs"
max_queued = 0

[[routes]]
path = "/api/v1/analyze/async"
[routes.async]
concurrency = 0
max_attempts = 0
backoff_base = "2s"
backoff_max = "1s"
status_path = "no-slash"
unit_cost = -1.0
dedup = "sometimes"
"#,
    );
    for path in [
        "jobs.backend",
        "jobs.status_prefix",
        "jobs.max_queued",
        "routes[0].async.concurrency",
        "routes[0].async.max_attempts",
        "routes[0].async.backoff_max",
        "routes[0].async.status_path",
        "routes[0].async.unit_cost",
        "routes[0].async.dedup",
    ] {
        let p = find(&e, path);
        assert!(at(p).is_some(), "{path} has a file position: {p}");
    }
}

/// Every problem of the `[logs]` section is reported with its path and
/// line; an unknown access mode is refused by name.
#[test]
fn log_settings_report_every_problem_with_its_line() {
    let e = errors(
        r#"
[logs]
data_dir = " "
max_bytes = "1MiB"
commit_interval = "30s"
queue = 0
access = "file"
access_file = ""
[logs.otlp]
endpoint = "https://collector:4318/v1/logs"
batch = 0
"#,
    );
    for path in [
        "logs.data_dir",
        "logs.max_bytes",
        "logs.commit_interval",
        "logs.queue",
        "logs.access_file",
        "logs.otlp.endpoint",
        "logs.otlp.batch",
    ] {
        let p = find(&e, path);
        assert!(at(p).is_some(), "{path} has a file position: {p}");
    }
    let e = errors("[logs]\naccess = \"syslog\"\n");
    find(&e, "logs.access");
}

/// The breaker's failure classification is validated with its path, and
/// its defaults count connection failures and 502/503/504 only; retries
/// after a response are off by default.
#[test]
fn breaker_classification_is_validated() {
    let e = errors(
        r#"
[upstream]
url = "http://127.0.0.1:8000"
[upstream.breaker]
on_errors = ["connect", "refused"]
on_status = [503, 200]
"#,
    );
    let text = e.to_string();
    for needle in [
        "upstream.breaker.on_errors[1]",
        "upstream.breaker.on_status[1]",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let c = load_ok(
        r#"
[upstream]
url = "http://127.0.0.1:8000"
"#,
        &[],
    );
    assert_eq!(c.upstream.breaker.on_status, vec![502, 503, 504]);
    assert_eq!(
        c.upstream.breaker.on_errors,
        vec!["connect", "timeout", "protocol"]
    );
    assert!(c.upstream.retry.on_status.is_empty());
}

/// Issue #11 (19): an HS256 secret shorter than 32 bytes is refused at
/// validation, naming the field; 32 bytes (plus a newline) pass.
#[test]
fn short_hs256_secret_file_refused() {
    let dir = std::env::temp_dir();
    let short = dir.join(format!(
        "perfgate-config-short-{}.secret",
        std::process::id()
    ));
    let long = dir.join(format!(
        "perfgate-config-long-{}.secret",
        std::process::id()
    ));
    std::fs::write(&short, "only-sixteen-byt\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&long, "0123456789abcdef0123456789abcdef\n").unwrap_or_else(|e| panic!("{e}"));
    let text = |f: &std::path::Path| {
        format!(
            "[upstream]\nurl = \"http://u\"\n[jwt]\nmode = \"required\"\nsecret_file = {:?}\n",
            f.to_string_lossy()
        )
    };
    let e = errors(&text(&short));
    let problem = find(&e, "jwt.secret_file");
    assert!(problem.reason.contains("16 bytes"), "{e}");
    load_ok(&text(&long), &[]);
    let _ = std::fs::remove_file(short);
    let _ = std::fs::remove_file(long);
}

/// Issue #11 (15): `admin.allowed_hosts` entries are names or name:port,
/// each problem named by its index.
#[test]
fn admin_allowed_hosts_are_checked() {
    let base = "[upstream]\nurl = \"http://u\"\n[admin]\n";
    let c = load_ok(
        &format!(
            "{base}allowed_hosts = [\"admin.internal\", \"ops:9443\"]\nallow_unauthenticated = true\n"
        ),
        &[],
    );
    assert!(c.admin.allow_unauthenticated);
    assert_eq!(c.admin.allowed_hosts.len(), 2);
    let e = errors(&format!(
        "{base}allowed_hosts = [\"ok.example\", \"http://x\", \"\"]\n"
    ));
    find(&e, "admin.allowed_hosts[1]");
    find(&e, "admin.allowed_hosts[2]");
    assert_eq!(e.problems.len(), 2, "{e}");
}
