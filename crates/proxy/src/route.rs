//! Route selection: which route (and so which upstream and cache policy) a
//! request belongs to. Built once from the config; selecting allocates nothing.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method};
use perfgate_cache::policy::RoutePolicy;
use perfgate_config::{Config, IpNet, JwtMode, QueryClamp, RouteConfig};
use perfgate_observe::{Metrics, RouteMetrics};

use crate::stats::Stats;
use perfgate_http::error::{Error, ErrorKind};
use perfgate_traffic::breaker::Breaker;
use perfgate_upstream::pool::{Pool, Pools};
use perfgate_upstream::upstream::Upstream;

#[derive(Debug)]
enum Matcher {
    /// Segment-boundary prefix.
    Prefix(Arc<str>),
    /// Literal and `{param}` segments, optionally ending in `*`; `template`
    /// is the pattern as configured (normalized).
    Pattern {
        template: Arc<str>,
        segments: Vec<Segment>,
        rest: bool,
    },
}

#[derive(Debug)]
enum Segment {
    Literal(String),
    Param,
}

impl Matcher {
    fn matches(&self, path: &str) -> bool {
        match self {
            Matcher::Prefix(p) => {
                &**p == "/"
                    || (path.starts_with(&**p)
                        && (path.len() == p.len()
                            || p.ends_with('/')
                            || path.as_bytes().get(p.len()) == Some(&b'/')))
            }
            Matcher::Pattern { segments, rest, .. } => {
                let mut parts = path.trim_start_matches('/').split('/');
                for seg in segments {
                    match (seg, parts.next()) {
                        (Segment::Literal(l), Some(p)) if l == p => {}
                        (Segment::Param, Some(p)) if !p.is_empty() => {}
                        _ => return false,
                    }
                }
                *rest || parts.next().is_none()
            }
        }
    }

    /// Longer literal text wins when several routes match.
    fn specificity(&self) -> usize {
        match self {
            Matcher::Prefix(p) => p.len(),
            Matcher::Pattern { segments, .. } => segments
                .iter()
                .map(|s| match s {
                    Segment::Literal(l) => l.len() + 1,
                    Segment::Param => 1,
                })
                .sum(),
        }
    }

    fn parse_pattern(p: &str) -> Self {
        let mut segments = Vec::new();
        let mut rest = false;
        for s in p.trim_start_matches('/').split('/') {
            if s == "*" {
                rest = true;
                break;
            }
            if s.starts_with('{') && s.ends_with('}') {
                segments.push(Segment::Param);
            } else {
                segments.push(Segment::Literal(s.to_string()));
            }
        }
        Matcher::Pattern {
            template: Arc::from(p),
            segments,
            rest,
        }
    }

    /// The path template requests of this route are logged under: the
    /// prefix, or the pattern (`/events/{id}`).
    fn template(&self) -> &Arc<str> {
        match self {
            Matcher::Prefix(p) => p,
            Matcher::Pattern { template, .. } => template,
        }
    }
}

/// One compiled route.
pub struct Route {
    /// Name in metrics and logs.
    pub name: Arc<str>,
    matcher: Matcher,
    methods: Vec<Method>,
    /// Where requests go.
    pub(crate) pool: Arc<Pool>,
    /// Where safe requests (GET, HEAD, OPTIONS) go, when the pool has a read pool.
    pub(crate) read_pool: Option<Arc<Pool>>,
    /// This route's circuit breaker on `pool` (breakers are per route and
    /// pool: one failing route does not stop the others).
    pub(crate) breaker: Option<Arc<Breaker>>,
    /// This route's circuit breaker on `read_pool`.
    pub(crate) read_breaker: Option<Arc<Breaker>>,
    /// Deadline of one attempt's response head (default: the pool's).
    pub(crate) response_timeout: Option<Duration>,
    /// Deadline of the whole exchange, retries included.
    pub(crate) total_timeout: Option<Duration>,
    /// A client with this route's own connect timeout, when it sets one.
    pub(crate) client: Option<Upstream>,
    /// `[routes.async]`: POST is accepted as a job.
    pub(crate) async_job: Option<Arc<perfgate_config::AsyncRouteConfig>>,
    /// This route's own status URL prefix (`[routes.async] status_path`).
    pub(crate) job_status_path: Option<String>,
    /// Forward the client's `Host` (`upstream.preserve_host`).
    pub(crate) preserve_host: bool,
    /// Longest silence while streaming an upstream body
    /// (`upstream.body_idle_timeout`).
    pub(crate) body_idle_timeout: Duration,
    /// Never use the cache.
    pub bypass: bool,
    /// Caching policy.
    pub policy: RoutePolicy,
    /// Tags attached to every response stored through this route.
    pub tags: Vec<Arc<str>>,
    /// Tags purged after a successful unsafe request on this route.
    pub invalidate_tags: Vec<Arc<str>>,
    /// Pre-resolved metric handles.
    pub metrics: RouteMetrics,
    /// Peers whose `X-Forwarded-*` headers are trusted.
    pub(crate) trusted: Arc<[IpNet]>,
    /// The forwarding fields a trusted peer may pass upstream
    /// (`forwarded.trusted_headers`).
    pub(crate) trusted_headers: Arc<[http::HeaderName]>,
    /// Query parameters clamped before routing and caching.
    pub(crate) clamps: Vec<QueryClamp>,
    /// JWT validation on this route.
    pub(crate) jwt: JwtMode,
    /// Cache statistics of this route.
    pub(crate) stats: Stats,
}

/// All routes, most specific first, and the fallback.
pub struct Routes {
    routes: Vec<Arc<Route>>,
    fallback: Option<Arc<Route>>,
}

impl Routes {
    /// Compiles the routes of `config` (already validated) onto `pools`.
    pub(crate) fn build(config: &Config, metrics: &Metrics, pools: &Pools) -> Result<Self, String> {
        let default_target = if config.upstream.url.is_empty() {
            None
        } else {
            Some(
                pools
                    .get(&config.upstream.url)
                    .cloned()
                    .ok_or("the default upstream has no pool")?,
            )
        };
        let trusted: Arc<[IpNet]> = config
            .forwarded
            .trusted_proxies
            .iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .map_err(|e| format!("forwarded.trusted_proxies: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?
            .into();
        let trusted_headers: Arc<[http::HeaderName]> = config
            .forwarded
            .trusted_headers
            .iter()
            .map(|s| {
                http::HeaderName::from_bytes(s.as_bytes())
                    .map_err(|_| format!("forwarded.trusted_headers: invalid header name {s:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?
            .into();
        let mut routes = Vec::with_capacity(config.routes.len());
        for rc in &config.routes {
            routes.push(Arc::new(compile(
                rc,
                config,
                default_target.as_ref(),
                metrics,
                &trusted,
                &trusted_headers,
                pools,
            )?));
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.matcher.specificity()));
        let fallback = default_target.map(|t| {
            Arc::new(Route {
                name: Arc::from("default"),
                matcher: Matcher::Prefix(Arc::from("/")),
                methods: Vec::new(),
                breaker: t.breaker_for("default"),
                read_breaker: None,
                pool: t,
                read_pool: None,
                response_timeout: None,
                total_timeout: None,
                client: None,
                async_job: None,
                job_status_path: None,
                preserve_host: config.upstream.preserve_host,
                body_idle_timeout: config.upstream.body_idle_timeout.get(),
                bypass: false,
                policy: base_policy(config),
                tags: Vec::new(),
                invalidate_tags: Vec::new(),
                metrics: metrics.route("default"),
                stats: Stats::default(),
                trusted: trusted.clone(),
                trusted_headers: trusted_headers.clone(),
                clamps: Vec::new(),
                jwt: config.jwt.mode,
            })
        });
        Ok(Self { routes, fallback })
    }

    /// Every route, fallback last.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter().chain(self.fallback.as_ref())
    }

    /// The route for a request. The most specific routes whose path
    /// matches decide: the first of them that takes the method is chosen;
    /// when none does, 405 with `Allow` (the request never falls through to
    /// a less specific route or the default upstream, which would skip the
    /// route's JWT, limits and cache policy). No path match: the default
    /// upstream, else 404.
    pub(crate) fn select(&self, method: &Method, path: &str) -> Result<&Arc<Route>, Error> {
        let mut decided: Option<usize> = None;
        for r in &self.routes {
            if !r.matcher.matches(path) {
                continue;
            }
            let specificity = r.matcher.specificity();
            if decided.is_some_and(|s| specificity < s) {
                break;
            }
            if r.accepts(method) {
                return Ok(r);
            }
            decided = Some(specificity);
        }
        match decided {
            Some(s) => Err(self.method_not_allowed(path, s)),
            None => self
                .fallback
                .as_ref()
                .ok_or_else(|| Error::new(ErrorKind::NoRoute, "no route for this path")),
        }
    }

    /// 405 naming the methods of the routes of specificity `s` for `path`.
    fn method_not_allowed(&self, path: &str, s: usize) -> Error {
        let mut allow: Vec<&str> = Vec::new();
        for r in self
            .routes
            .iter()
            .filter(|r| r.matcher.specificity() == s && r.matcher.matches(path))
        {
            for m in &r.methods {
                allow.push(m.as_str());
                if *m == Method::GET {
                    allow.push("HEAD");
                }
            }
        }
        allow.sort_unstable();
        allow.dedup();
        let allow = allow.join(", ");
        let mut err = Error::new(
            ErrorKind::MethodNotAllowed,
            format!("this path accepts {allow}"),
        );
        if let Ok(v) = HeaderValue::from_str(&allow) {
            err = err.with_header(http::header::ALLOW, v);
        }
        err
    }
}

impl Route {
    /// The path template of the route (`/events/{id}`, or its prefix).
    pub fn template(&self) -> &Arc<str> {
        self.matcher.template()
    }

    /// Whether the route takes `method` (HEAD wherever GET is listed).
    fn accepts(&self, method: &Method) -> bool {
        self.methods.is_empty()
            || self.methods.contains(method)
            || (*method == Method::HEAD && self.methods.contains(&Method::GET))
    }
}

fn base_policy(config: &Config) -> RoutePolicy {
    RoutePolicy {
        max_heuristic_ttl: config.cache.max_heuristic_ttl.get(),
        ..RoutePolicy::default()
    }
}

fn compile(
    rc: &RouteConfig,
    config: &Config,
    default_target: Option<&Arc<Pool>>,
    metrics: &Metrics,
    trusted: &Arc<[IpNet]>,
    trusted_headers: &Arc<[http::HeaderName]>,
    pools: &Pools,
) -> Result<Route, String> {
    // Requests are matched in normalized form (target.rs), so the
    // configured paths are too: `/%7Euser` and `/a//b` still match.
    let keys = perfgate_cache::key::KeyNormalizer::default().with_path_rules(
        perfgate_cache::key::PathRules {
            merge_slashes: config.server.merge_slashes,
            allow_encoded_slashes: config.server.allow_encoded_slashes,
        },
    );
    let normalized = |p: &String| {
        keys.normalize_path(p)
            .map_or_else(|_| p.clone(), |n| n.into_owned())
    };
    let matcher = match (&rc.path, &rc.pattern) {
        (Some(p), None) => Matcher::Prefix(Arc::from(normalized(p))),
        (None, Some(p)) => Matcher::parse_pattern(&normalized(p)),
        _ => return Err("a route needs exactly one of `path` and `pattern`".into()),
    };
    let name: Arc<str> = Arc::from(
        rc.name
            .clone()
            .or_else(|| rc.path.clone())
            .or_else(|| rc.pattern.clone())
            .unwrap_or_default(),
    );
    let (pool, read_pool) = match (&rc.pool, &rc.upstream) {
        (Some(p), _) => (
            pools
                .get(p)
                .cloned()
                .ok_or_else(|| format!("route {name}: no pool named {p:?}"))?,
            pools.read_pool_of(config, p),
        ),
        (None, Some(u)) => (
            pools
                .get(u)
                .cloned()
                .ok_or_else(|| format!("route {name}: no pool for {u}"))?,
            None,
        ),
        (None, None) => (
            default_target
                .cloned()
                .ok_or_else(|| format!("route {name}: no upstream and no default upstream"))?,
            None,
        ),
    };
    let client = rc.timeouts.connect.map(|d| {
        Upstream::new(&perfgate_config::UpstreamConfig {
            connect_timeout: d,
            ..config.upstream.clone()
        })
    });
    let methods = rc
        .methods
        .iter()
        .map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("route {name}: {e}"))?;
    let c = &rc.cache;
    let policy = RoutePolicy {
        default_ttl: c.default_ttl.map(|d| d.get()),
        stale_while_revalidate: c.stale_while_revalidate.map(|d| d.get()),
        stale_if_error: c.stale_if_error.map(|d| d.get()),
        authorized: c.authorized,
        cookies: c.cookies,
        allow_set_cookie: c.allow_set_cookie,
        ..base_policy(config)
    };
    Ok(Route {
        breaker: pool.breaker_for(&name),
        read_breaker: read_pool.as_ref().and_then(|p| p.breaker_for(&name)),
        metrics: metrics.route(&name),
        stats: Stats::default(),
        trusted: trusted.clone(),
        trusted_headers: trusted_headers.clone(),
        clamps: rc.query_clamps.clone(),
        jwt: rc.jwt.unwrap_or(config.jwt.mode),
        name,
        matcher,
        methods,
        pool,
        read_pool,
        response_timeout: rc.timeouts.response.map(|d| d.get()),
        total_timeout: rc.timeouts.total.map(|d| d.get()),
        client,
        async_job: rc.async_job.clone().map(Arc::new),
        job_status_path: rc
            .async_job
            .as_ref()
            .and_then(|a| a.status_path.as_ref())
            .map(|p| p.trim_end_matches('/').to_string()),
        preserve_host: config.upstream.preserve_host,
        body_idle_timeout: config.upstream.body_idle_timeout.get(),
        bypass: c.bypass,
        policy,
        tags: c.tags.iter().map(|t| Arc::from(t.as_str())).collect(),
        invalidate_tags: c
            .invalidate_tags
            .iter()
            .map(|t| Arc::from(t.as_str()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use perfgate_upstream::upstream::Target;

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        let m = Matcher::Prefix(Arc::from("/events"));
        assert!(m.matches("/events"));
        assert!(m.matches("/events/42"));
        assert!(!m.matches("/eventsx"));
        assert!(Matcher::Prefix(Arc::from("/")).matches("/anything"));
    }

    #[test]
    fn patterns_match_params_and_rest() {
        let m = Matcher::parse_pattern("/events/{id}");
        assert!(m.matches("/events/42"));
        assert!(!m.matches("/events/42/bookings"));
        assert!(!m.matches("/events/"));
        let m = Matcher::parse_pattern("/static/*");
        assert!(m.matches("/static/app.js"));
        assert!(m.matches("/static/a/b.css"));
        assert!(!m.matches("/other/a"));
    }

    fn routes(routes: Vec<RouteConfig>) -> Routes {
        let mut config = Config::default();
        config.upstream.url = "http://127.0.0.1:9".into();
        config.routes = routes;
        let metrics = Metrics::new();
        let pools = Pools::build(
            &config,
            &Arc::new(Metrics::new()),
            None,
            &perfgate_runtime::Supervisor::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Routes::build(&config, &metrics, &pools).unwrap_or_else(|e| panic!("{e}"))
    }

    fn route(name: &str, path: &str, methods: &[&str]) -> RouteConfig {
        RouteConfig {
            name: Some(name.into()),
            path: Some(path.into()),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            ..RouteConfig::default()
        }
    }

    fn chosen(r: &Routes, method: Method, path: &str) -> Result<String, (StatusCode, String)> {
        r.select(&method, path)
            .map(|r| r.name.to_string())
            .map_err(|e| {
                let rsp = e.into_response();
                let allow = rsp
                    .headers()
                    .get(http::header::ALLOW)
                    .map(|v| v.to_str().unwrap_or("?").to_string())
                    .unwrap_or_default();
                (rsp.status(), allow)
            })
    }

    /// Issue #11 (3): a method the route does not list gets 405 with
    /// `Allow`; it never falls through to a less specific route or the
    /// default upstream (which skipped the route's JWT, limits and clamps).
    #[tokio::test]
    async fn unlisted_method_is_405_not_the_default_route() {
        let r = routes(vec![
            route("account-read", "/api/v1/account", &["GET"]),
            route("account-write", "/api/v1/account", &["PUT"]),
            route("api", "/api", &[]),
        ]);
        let ok = |m: Method| chosen(&r, m, "/api/v1/account/7");
        assert_eq!(ok(Method::GET), Ok("account-read".into()));
        assert_eq!(ok(Method::HEAD), Ok("account-read".into()));
        assert_eq!(ok(Method::PUT), Ok("account-write".into()));
        let not_allowed = Err((StatusCode::METHOD_NOT_ALLOWED, "GET, HEAD, PUT".to_string()));
        assert_eq!(ok(Method::POST), not_allowed);
        assert_eq!(ok(Method::DELETE), not_allowed);
        // Less specific paths are not affected.
        assert_eq!(chosen(&r, Method::POST, "/api/v2"), Ok("api".into()));
        assert_eq!(chosen(&r, Method::POST, "/other"), Ok("default".into()));
    }

    /// Configured paths are matched in the normalized form requests have.
    #[tokio::test]
    async fn configured_paths_are_normalized_like_requests() {
        let r = routes(vec![
            route("tilde", "/users/%7ealice", &[]),
            route("double", "/a//b", &[]),
        ]);
        assert_eq!(
            chosen(&r, Method::GET, "/users/~alice/x"),
            Ok("tilde".into())
        );
        assert_eq!(chosen(&r, Method::GET, "/a/b"), Ok("double".into()));
    }

    #[test]
    fn target_parses_prefix() {
        let t = Target::parse("http://127.0.0.1:8000/api/").unwrap();
        assert_eq!(t.authority.as_str(), "127.0.0.1:8000");
        assert_eq!(t.prefix, "/api");
        assert!(Target::parse("https://x").is_err());
    }
}
