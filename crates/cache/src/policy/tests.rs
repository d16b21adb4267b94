use proptest::prelude::*;

use super::*;

/// 2001-09-09T01:46:40Z, a fixed "now" so that dates in headers are exact.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000)
}

fn http_date(offset_secs: i64) -> String {
    let at = if offset_secs >= 0 {
        now() + Duration::from_secs(offset_secs.unsigned_abs())
    } else {
        now() - Duration::from_secs(offset_secs.unsigned_abs())
    };
    httpdate::fmt_http_date(at)
}

use crate::test_util::headers;

fn timing() -> Timing {
    Timing {
        request_time: now(),
        response_time: now(),
    }
}

fn run(
    req: &[(&str, &str)],
    status: u16,
    rsp: &[(&str, &str)],
    policy: &RoutePolicy,
) -> Result<Freshness, Uncacheable> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    evaluate(
        &Method::GET,
        &headers(req),
        status,
        &headers(rsp),
        &timing(),
        policy,
    )
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn storability_rules() {
    use Uncacheable::*;
    let rfc = RoutePolicy::default();
    let with_ttl = RoutePolicy {
        default_ttl: Some(secs(30)),
        ..RoutePolicy::default()
    };
    let bypass = RoutePolicy {
        authorized: AuthorizedPolicy::Bypass,
        ..RoutePolicy::default()
    };
    let shared = RoutePolicy {
        authorized: AuthorizedPolicy::Shared,
        ..RoutePolicy::default()
    };
    let per_user = RoutePolicy {
        authorized: AuthorizedPolicy::PerUser,
        ..RoutePolicy::default()
    };
    let cookies = RoutePolicy {
        allow_set_cookie: true,
        ..RoutePolicy::default()
    };
    let cookie_bypass = RoutePolicy {
        cookies: CookiePolicy::Bypass,
        ..RoutePolicy::default()
    };
    let cookie_ignore = RoutePolicy {
        cookies: CookiePolicy::Ignore,
        ..RoutePolicy::default()
    };
    let cookie = [("cookie", "session=alice")];
    let auth = [("authorization", "Bearer x")];
    let ma = [("cache-control", "max-age=60")];
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        u16,
        &'a [(&'a str, &'a str)],
        &'a RoutePolicy,
        Result<u64, Uncacheable>,
    );
    let cases: &[Case<'_>] = &[
        ("max-age", &[], 200, &ma, &rfc, Ok(60)),
        (
            "request no-store",
            &[("cache-control", "no-store")],
            200,
            &ma,
            &rfc,
            Err(RequestNoStore),
        ),
        ("partial", &[], 206, &ma, &rfc, Err(Partial)),
        ("not modified", &[], 304, &ma, &rfc, Err(Status)),
        ("informational", &[], 103, &ma, &rfc, Err(Status)),
        (
            "response no-store",
            &[],
            200,
            &[("cache-control", "max-age=5, no-store")],
            &rfc,
            Err(NoStore),
        ),
        (
            "private",
            &[],
            200,
            &[("cache-control", "private, max-age=5")],
            &rfc,
            Err(Private),
        ),
        (
            "vary star",
            &[],
            200,
            &[("cache-control", "max-age=5"), ("vary", "*")],
            &rfc,
            Err(VaryStar),
        ),
        ("auth rfc plain", &auth, 200, &ma, &rfc, Err(Authorization)),
        // Issue #11 item 9: `Cookie` is treated like `Authorization`.
        ("cookie rfc plain", &cookie, 200, &ma, &rfc, Err(Cookie)),
        (
            "cookie default ttl",
            &cookie,
            200,
            &[],
            &with_ttl,
            Err(Cookie),
        ),
        (
            "cookie rfc public",
            &cookie,
            200,
            &[("cache-control", "public, max-age=5")],
            &rfc,
            Ok(5),
        ),
        (
            "cookie rfc s-maxage",
            &cookie,
            200,
            &[("cache-control", "s-maxage=7")],
            &rfc,
            Ok(7),
        ),
        (
            "cookie rfc must-revalidate is not enough",
            &cookie,
            200,
            &[("cache-control", "max-age=5, must-revalidate")],
            &rfc,
            Err(Cookie),
        ),
        (
            "cookie bypass public",
            &cookie,
            200,
            &[("cache-control", "public, max-age=5")],
            &cookie_bypass,
            Err(Cookie),
        ),
        ("cookie ignored", &cookie, 200, &ma, &cookie_ignore, Ok(60)),
        (
            "auth rfc public",
            &auth,
            200,
            &[("cache-control", "public, max-age=5")],
            &rfc,
            Ok(5),
        ),
        (
            "auth rfc s-maxage",
            &auth,
            200,
            &[("cache-control", "s-maxage=7")],
            &rfc,
            Ok(7),
        ),
        (
            "auth rfc must-revalidate",
            &auth,
            200,
            &[("cache-control", "max-age=5, must-revalidate")],
            &rfc,
            Ok(5),
        ),
        (
            "auth bypass",
            &auth,
            200,
            &[("cache-control", "public, max-age=5")],
            &bypass,
            Err(Authorization),
        ),
        ("auth shared", &auth, 200, &ma, &shared, Ok(60)),
        ("auth per user", &auth, 200, &ma, &per_user, Ok(60)),
        (
            "set-cookie",
            &[],
            200,
            &[("cache-control", "max-age=5"), ("set-cookie", "a=1")],
            &rfc,
            Err(SetCookie),
        ),
        (
            "set-cookie allowed",
            &[],
            200,
            &[("cache-control", "max-age=5"), ("set-cookie", "a=1")],
            &cookies,
            Ok(5),
        ),
        (
            "s-maxage over max-age",
            &[],
            200,
            &[("cache-control", "max-age=5, s-maxage=9")],
            &rfc,
            Ok(9),
        ),
        (
            "invalid max-age",
            &[],
            200,
            &[("cache-control", "max-age=soon")],
            &rfc,
            Ok(0),
        ),
        (
            "expires",
            &[],
            200,
            &[("date", &http_date(0)), ("expires", &http_date(100))],
            &rfc,
            Ok(100),
        ),
        (
            "expires past",
            &[],
            200,
            &[("date", &http_date(0)), ("expires", &http_date(-100))],
            &rfc,
            Ok(0),
        ),
        (
            "expires invalid",
            &[],
            200,
            &[("expires", "0")],
            &rfc,
            Ok(0),
        ),
        (
            "max-age over expires",
            &[],
            200,
            &[("cache-control", "max-age=3"), ("expires", &http_date(100))],
            &rfc,
            Ok(3),
        ),
        ("no info", &[], 200, &[], &rfc, Err(NoFreshness)),
        ("default ttl", &[], 200, &[], &with_ttl, Ok(30)),
        ("default ttl on 404", &[], 404, &[], &with_ttl, Ok(30)),
        (
            "default ttl not on 302",
            &[],
            302,
            &[],
            &with_ttl,
            Err(Status),
        ),
        ("302 explicit", &[], 302, &ma, &rfc, Ok(60)),
        ("500 explicit", &[], 500, &ma, &rfc, Ok(60)),
        (
            "public 302 default ttl",
            &[],
            302,
            &[("cache-control", "public")],
            &with_ttl,
            Ok(30),
        ),
        (
            "heuristic",
            &[],
            200,
            &[
                ("date", &http_date(0)),
                ("last-modified", &http_date(-1000)),
            ],
            &rfc,
            Ok(100),
        ),
        (
            "heuristic capped",
            &[],
            200,
            &[("last-modified", &http_date(-10_000_000))],
            &rfc,
            Ok(86_400),
        ),
        (
            "heuristic future lm",
            &[],
            200,
            &[("last-modified", &http_date(50))],
            &rfc,
            Ok(0),
        ),
        (
            "default ttl beats heuristic",
            &[],
            200,
            &[("last-modified", &http_date(-1000))],
            &with_ttl,
            Ok(30),
        ),
        (
            "no-cache without validators",
            &[],
            200,
            &[("cache-control", "no-cache, max-age=60")],
            &rfc,
            Err(NoCache),
        ),
        (
            "no-cache with etag",
            &[],
            200,
            &[("cache-control", "no-cache"), ("etag", "\"a\"")],
            &rfc,
            Ok(0),
        ),
        (
            "no-cache 302 etag",
            &[],
            302,
            &[("cache-control", "no-cache"), ("etag", "\"a\"")],
            &rfc,
            Err(Status),
        ),
    ];
    for (name, req, status, rsp, policy, expected) in cases {
        let got = run(req, *status, rsp, policy).map(|f| f.lifetime.as_secs());
        assert_eq!(got, *expected, "{name}");
    }
}

#[test]
fn reasons_render_as_kebab_case() {
    assert_eq!(Uncacheable::VaryStar.to_string(), "vary-star");
    assert_eq!(Uncacheable::NoFreshness.as_str(), "no-freshness");
}

#[test]
fn only_get_is_stored() {
    let rsp = headers(&[("cache-control", "max-age=60")]);
    for method in [Method::HEAD, Method::POST, Method::PUT] {
        let got = evaluate(
            &method,
            &HeaderMap::new(),
            StatusCode::OK,
            &rsp,
            &timing(),
            &RoutePolicy::default(),
        );
        assert_eq!(got, Err(Uncacheable::Method));
    }
}

#[test]
fn flags_follow_directives() {
    let rfc = RoutePolicy::default();
    let with_ttl = RoutePolicy {
        default_ttl: Some(secs(30)),
        ..RoutePolicy::default()
    };
    let Ok(f) = run(
        &[],
        200,
        &[("cache-control", "no-cache"), ("etag", "\"a\"")],
        &rfc,
    ) else {
        panic!("no-cache with etag must be storable");
    };
    assert!(f.no_cache && !f.must_revalidate && !f.heuristic);
    let Ok(f) = run(&[], 200, &[("last-modified", &http_date(-1000))], &rfc) else {
        panic!("heuristic must be storable");
    };
    assert!(f.heuristic);
    let Ok(f) = run(&[], 200, &[], &with_ttl) else {
        panic!("default ttl must apply");
    };
    assert!(!f.heuristic);
}

#[test]
fn stale_windows_and_revalidation() {
    let route = RoutePolicy {
        stale_while_revalidate: Some(secs(11)),
        stale_if_error: Some(secs(22)),
        ..RoutePolicy::default()
    };
    let check = |cc: &str, swr: u64, sie: u64, must: bool| {
        let Ok(f) = run(
            &[],
            200,
            &[("cache-control", cc), ("etag", "\"e\"")],
            &route,
        ) else {
            panic!("{cc} must be storable");
        };
        assert_eq!(
            (
                f.stale_while_revalidate,
                f.stale_if_error,
                f.must_revalidate
            ),
            (secs(swr), secs(sie), must),
            "{cc}"
        );
    };
    check("max-age=5", 11, 22, false);
    check("max-age=5, stale-while-revalidate=3", 3, 22, false);
    check("max-age=5, stale-if-error=4", 11, 4, false);
    check("max-age=5, must-revalidate, stale-if-error=4", 0, 0, true);
    check("max-age=5, proxy-revalidate", 0, 0, true);
    check("s-maxage=5", 0, 0, true);
    check("s-maxage=5, stale-while-revalidate=3", 3, 22, false);
    check("s-maxage=5, stale-if-error=4", 11, 4, false);
    check("no-cache", 0, 0, false);
    check("no-cache, stale-if-error=9", 0, 9, false);
}

#[test]
fn initial_age_follows_rfc_9111() {
    let timing = Timing {
        request_time: now(),
        response_time: now() + secs(2),
    };
    let age = |rsp: &[(&str, &str)]| {
        evaluate(
            &Method::GET,
            &HeaderMap::new(),
            StatusCode::OK,
            &headers(rsp),
            &timing,
            &RoutePolicy::default(),
        )
        .map(|f| f.initial_age.as_secs())
    };
    // Age plus the response delay.
    assert_eq!(
        age(&[("cache-control", "max-age=60"), ("age", "10")]),
        Ok(12)
    );
    // Apparent age from Date when it is larger.
    assert_eq!(
        age(&[("cache-control", "max-age=60"), ("date", &http_date(-30))]),
        Ok(32)
    );
    // A Date in the future gives no negative age; invalid Age is ignored.
    assert_eq!(
        age(&[
            ("cache-control", "max-age=60"),
            ("date", &http_date(60)),
            ("age", "x")
        ]),
        Ok(2)
    );
    assert_eq!(
        age(&[
            ("cache-control", "max-age=60"),
            ("age", "99999999999999999999999")
        ]),
        Ok(u64::MAX)
    );
}

fn any_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let names = prop_oneof![
        Just("cache-control"),
        Just("expires"),
        Just("date"),
        Just("age"),
        Just("last-modified"),
        Just("etag"),
        Just("vary"),
        Just("set-cookie"),
        Just("authorization"),
    ];
    let values = prop_oneof![
        "[ -~]{0,30}".boxed(),
        "(max-age|s-maxage|stale-if-error|stale-while-revalidate)=[0-9]{0,25}".boxed(),
        (-900_000_000i64..2_000_000_000).prop_map(http_date).boxed(),
    ];
    proptest::collection::vec((names.prop_map(str::to_owned), values), 0..8)
}

proptest! {
    #[test]
    fn evaluate_never_panics(
        req in any_headers(),
        rsp in any_headers(),
        status in 100u16..600,
        delay in any::<i32>(),
        ttl in proptest::option::of(any::<u64>()),
    ) {
        let to_map = |pairs: &[(String, String)]| {
            let refs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            headers(&refs)
        };
        let timing = Timing {
            request_time: now(),
            response_time: now().checked_add(Duration::from_secs(u64::from(delay.unsigned_abs()))).unwrap_or(now()),
        };
        let timing = if delay < 0 { Timing { request_time: timing.response_time, response_time: now() } } else { timing };
        let policy = RoutePolicy {
            default_ttl: ttl.map(Duration::from_secs),
            stale_while_revalidate: ttl.map(Duration::from_secs),
            ..RoutePolicy::default()
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        if let Ok(f) = evaluate(&Method::GET, &to_map(&req), status, &to_map(&rsp), &timing, &policy) {
            let _ = f.time_to_live();
            let _ = reuse(&f, f.initial_age, &CacheControl::from_headers(&to_map(&req)));
            let _ = f.usable_if_error(Duration::MAX);
        }
    }
}
