//! JWT validation on the request path: the route's [`JwtMode`] decides
//! whether the bearer token is looked at, may be absent, or is required.
//!
//! - `off`: the token is not read; only the `jwt.forward_claims` headers a
//!   client sent are removed (when JWT is in use at all), since the upstream
//!   may trust them on every route.
//! - `optional`: no bearer token → the request goes on with no user; a
//!   bearer token that does not validate → 401.
//! - `required`: a missing or invalid bearer token → 401.
//!
//! On `optional`/`required` requests too, the headers named in
//! `jwt.forward_claims` are removed first, whatever the token, so a client
//! can never send its own `X-User-Id`; after a successful validation they are
//! set from the token's claims and `conn.user` is the user claim.
//!
//! 401 responses carry `WWW-Authenticate` (RFC 6750 §3): `Bearer
//! realm="perfgate"` when no token was sent, and `error="invalid_token"`
//! with the reason (the client-safe [`JwtError`] text) when one was refused.
//! Validated tokens are cached by [`JwtValidator`], so the hot path of a
//! repeat token is one cache lookup.

use std::ffi::OsString;
use std::sync::Arc;

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue};
use perfgate_config::{Config, JwtConfig, JwtMode};
use perfgate_identity::{JwtError, JwtSettings, JwtValidator, bearer};

use crate::context::Conn;
use crate::route::Route;
use perfgate_http::body::Body;
use perfgate_http::error::{Error, ErrorKind};

#[cfg(test)]
mod tests;

/// The environment variable holding an HS256 secret (read at build, so a
/// reload re-reads it).
const SECRET_ENV: &str = "PERFGATE_JWT_SECRET";

/// `WWW-Authenticate` of a request that sent no bearer token.
const CHALLENGE: HeaderValue = HeaderValue::from_static("Bearer realm=\"perfgate\"");

/// The compiled `[jwt]` settings.
pub(crate) struct Identity {
    validator: JwtValidator,
    /// `jwt.forward_claims`: claim → header sent to the upstream.
    forward: Vec<(String, HeaderName)>,
    /// Some forwarded-claim header has a `_` in its name: a client field
    /// with a `-` can then match it too.
    underscored: bool,
}

/// Why a request was refused with 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No bearer token on a route that requires one.
    Missing,
    /// More than one `Authorization` field: which one the upstream would
    /// read is not ours to guess.
    Ambiguous,
    /// A bearer token that did not validate.
    Invalid(JwtError),
}

impl Refusal {
    /// The `reason` label of `perfgate_jwt_failures_total`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Ambiguous => "multiple_authorization",
            Refusal::Invalid(e) => e.code(),
        }
    }

    /// The 401 response.
    pub(crate) fn into_error(self) -> Error {
        let (message, challenge) = match self {
            Refusal::Missing => ("a bearer token is required".to_string(), CHALLENGE),
            Refusal::Ambiguous => {
                let message = "more than one Authorization field";
                (message.to_string(), challenge("invalid_request", message))
            }
            Refusal::Invalid(e) => {
                let message = e.to_string();
                let challenge = challenge("invalid_token", &message);
                (message, challenge)
            }
        };
        Error::new(ErrorKind::Unauthorized, message).with_header(WWW_AUTHENTICATE, challenge)
    }
}

/// `Bearer realm="perfgate", error="…", error_description="…"`, the
/// description escaped as a quoted-string (it is our own text, but a claim
/// name can end up in it).
fn challenge(error: &str, description: &str) -> HeaderValue {
    let mut value = format!("Bearer realm=\"perfgate\", error=\"{error}\", error_description=\"");
    for c in description.chars() {
        match c {
            '"' | '\\' => {
                value.push('\\');
                value.push(c);
            }
            ' '..='~' => value.push(c),
            _ => value.push('?'),
        }
    }
    value.push('"');
    HeaderValue::from_str(&value).unwrap_or(CHALLENGE)
}

/// Whether some route (or the default route) validates tokens.
fn jwt_used(config: &Config) -> bool {
    config.jwt.mode != JwtMode::Off
        || config
            .routes
            .iter()
            .any(|r| r.jwt.unwrap_or(config.jwt.mode) != JwtMode::Off)
}

impl Identity {
    /// `None` when no route validates tokens. Reads the key files and
    /// `PERFGATE_JWT_SECRET`; Err names every key that failed to load.
    pub(crate) fn build(config: &Config) -> Result<Option<Self>, String> {
        if !jwt_used(config) {
            return Ok(None);
        }
        Self::from_settings(&config.jwt, std::env::var_os(SECRET_ENV)).map(Some)
    }

    /// [`build`](Self::build) with the environment secret given.
    pub(crate) fn from_settings(
        jwt: &JwtConfig,
        env_secret: Option<OsString>,
    ) -> Result<Self, String> {
        // Trailing whitespace is trimmed, as it is from `secret_file`
        // (`export PERFGATE_JWT_SECRET=$(cat file)` keeps a newline); an
        // empty variable counts as unset.
        let secrets = env_secret
            .map(|s| {
                let mut bytes = s.into_encoded_bytes();
                let len = bytes.trim_ascii_end().len();
                bytes.truncate(len);
                bytes
            })
            .filter(|s| !s.is_empty())
            .into_iter()
            .collect();
        let settings = JwtSettings {
            algorithms: jwt.algorithms.clone(),
            secret_files: jwt.secret_file.iter().cloned().collect(),
            secrets,
            public_key_files: jwt.public_key_files.clone(),
            jwks_file: jwt.jwks_file.clone(),
            issuers: jwt.issuers.clone(),
            audiences: jwt.audiences.clone(),
            leeway: jwt.leeway.get(),
            require_exp: true,
            user_claim: jwt.user_claim.clone(),
        };
        let validator = validator(settings)?;
        let forward = jwt
            .forward_claims
            .iter()
            .map(|(claim, header)| {
                HeaderName::from_bytes(header.as_bytes())
                    .map(|name| (claim.clone(), name))
                    .map_err(|_| format!("jwt.forward_claims.{claim}: invalid header name"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let underscored = forward.iter().any(|(_, n)| n.as_str().contains('_'));
        Ok(Self {
            validator,
            forward,
            underscored,
        })
    }

    /// Applies `mode` (not `Off`) to a request's headers: removes the
    /// forwarded-claim headers, validates the bearer token, sets the
    /// forwarded claims. Returns the user (None: no token on an optional
    /// route, or a token without a usable user claim).
    pub(crate) fn check(
        &self,
        mode: JwtMode,
        headers: &mut HeaderMap,
    ) -> Result<Option<Arc<str>>, Refusal> {
        // First, whatever the token: clients must not choose these.
        self.strip_claim_headers(headers);
        let claims = {
            let mut fields = headers.get_all(AUTHORIZATION).iter();
            let token = match (fields.next(), fields.next()) {
                (None, _) => None,
                (Some(_), Some(_)) => return Err(Refusal::Ambiguous),
                (Some(value), None) => match bearer(value.as_bytes()) {
                    Some(token) => Some(token),
                    // "Bearer" with nothing usable after it is a bad token,
                    // not an absent one.
                    None if is_bearer_scheme(value.as_bytes()) => {
                        return Err(Refusal::Invalid(JwtError::Malformed));
                    }
                    // Another scheme (Basic…) is not ours to judge.
                    None => None,
                },
            };
            match token {
                None if mode == JwtMode::Required => return Err(Refusal::Missing),
                None => return Ok(None),
                Some(token) => self.validator.validate(token).map_err(Refusal::Invalid)?,
            }
        };
        for (claim, name) in &self.forward {
            if let Some(value) = claims
                .header_value(claim)
                .and_then(|v| HeaderValue::from_str(&v).ok())
            {
                headers.insert(name.clone(), value);
            }
        }
        Ok(claims.user().map(Arc::from))
    }
}

impl Identity {
    /// Removes every client field that an upstream could read as a
    /// forwarded claim: the exact names, and any whose name equals one
    /// once `_` is read as `-` (`X_User_Id`; hyper has already lowercased
    /// it), as CGI/WSGI-style servers do (both turn into `HTTP_X_USER_ID`).
    pub(crate) fn strip_claim_headers(&self, headers: &mut HeaderMap) {
        for (_, name) in &self.forward {
            headers.remove(name);
        }
        if self.forward.is_empty() {
            return;
        }
        let spoofed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| {
                let k = k.as_str();
                k.contains('_') || self.underscored
            })
            .filter(|k| {
                self.forward
                    .iter()
                    .any(|(_, n)| same_modulo_underscore(k.as_str(), n.as_str()))
            })
            .cloned()
            .collect();
        for name in spoofed {
            headers.remove(name);
        }
    }
}

/// Equal after lowercasing and reading `_` as `-`.
fn same_modulo_underscore(a: &str, b: &str) -> bool {
    let norm = |c: u8| match c {
        b'_' => b'-',
        c => c.to_ascii_lowercase(),
    };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| norm(x) == norm(y))
}

/// `Bearer` alone or followed by whitespace (case-insensitive).
fn is_bearer_scheme(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    value.len() >= 6
        && value[..6].eq_ignore_ascii_case(b"bearer")
        && value.get(6).is_none_or(|b| b.is_ascii_whitespace())
}

/// The validator for `settings`. Algorithms for which no key of their
/// family is configured are dropped when at least one usable algorithm
/// remains: `jwt.algorithms` allows all three by default, and a deployment
/// with only an HS256 secret must not fail to start for lack of an RSA key.
/// Key files that fail to load are always an error.
fn validator(settings: JwtSettings) -> Result<JwtValidator, String> {
    let errors = match JwtValidator::new(&settings) {
        Ok(v) => return Ok(v),
        Err(errors) => errors,
    };
    let usable: Vec<String> = settings
        .algorithms
        .iter()
        .filter(|alg| {
            JwtValidator::new(&JwtSettings {
                algorithms: vec![(*alg).clone()],
                ..settings.clone()
            })
            .is_ok()
        })
        .cloned()
        .collect();
    if usable.is_empty() {
        return Err(errors.join("; "));
    }
    let dropped: Vec<&str> = settings
        .algorithms
        .iter()
        .filter(|a| !usable.contains(a))
        .map(String::as_str)
        .collect();
    if settings.algorithms != JwtConfig::default().algorithms {
        tracing::warn!(
            dropped = ?dropped,
            "jwt.algorithms: no key is configured for these algorithms; tokens using them are refused"
        );
    }
    JwtValidator::new(&JwtSettings {
        algorithms: usable,
        ..settings
    })
    .map_err(|errors| errors.join("; "))
}

/// The identity phase: validates the bearer token as the route's JWT mode
/// asks; sets `conn.user` and the forwarded claim headers. 401 on a bad
/// token.
pub(crate) fn identify(
    identity: Option<&Identity>,
    route: &Route,
    req: &mut http::Request<Body>,
    conn: &mut Conn,
    metrics: &perfgate_observe::Metrics,
) -> Result<(), Error> {
    if route.jwt == JwtMode::Off {
        // The upstream may trust the forwarded-claim headers on every
        // route: a client never gets to set them, here either.
        if let Some(identity) = identity {
            identity.strip_claim_headers(req.headers_mut());
        }
        return Ok(());
    }
    let Some(identity) = identity else {
        // Not reachable: Identity::build returns Some whenever a route
        // validates tokens. Refuse rather than let the request through.
        return Err(Error::new(
            ErrorKind::Internal,
            "token validation is not configured",
        ));
    };
    match identity.check(route.jwt, req.headers_mut()) {
        Ok(user) => {
            conn.user = user;
            Ok(())
        }
        Err(refusal) => {
            metrics.traffic.jwt_failure(refusal.code());
            Err(refusal.into_error())
        }
    }
}
