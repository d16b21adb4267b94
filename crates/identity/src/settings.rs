//! The validator's settings.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation};

/// How tokens are validated: accepted algorithms, keys and claim checks.
///
/// `Debug` shows inline secrets as their count only.
#[derive(Clone)]
pub struct JwtSettings {
    /// Algorithms accepted (subset of HS256, RS256, ES256); a token whose
    /// header names another is refused.
    pub algorithms: Vec<String>,
    /// Files with an HMAC secret (HS256); the whole file content, trailing
    /// whitespace/newline trimmed.
    pub secret_files: Vec<String>,
    /// Inline secret bytes (from an environment variable), for HS256.
    pub secrets: Vec<Vec<u8>>,
    /// PEM files with an RSA or EC P-256 public key (SPKI "PUBLIC KEY", or
    /// "RSA PUBLIC KEY"), or a certificate.
    pub public_key_files: Vec<String>,
    /// A JWKS file (JSON `{"keys":[...]}`, RSA and EC P-256 keys, `kid` used
    /// when tokens carry one).
    pub jwks_file: Option<String>,
    /// Accepted `iss` values; empty = not checked. When set, tokens without
    /// `iss` are refused.
    pub issuers: Vec<String>,
    /// Accepted `aud` values (token `aud` may be a string or array; one match
    /// is enough); empty = not checked. When set, tokens without `aud` are
    /// refused.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp`/`nbf` (whole seconds; fractions dropped).
    pub leeway: Duration,
    /// Require `exp` to be present.
    pub require_exp: bool,
    /// Claim holding the user id (default "sub"; empty means "sub").
    pub user_claim: String,
}

impl Default for JwtSettings {
    /// No algorithm and no key (so not usable as is), 60 s leeway, `exp`
    /// required, user in `sub`.
    fn default() -> Self {
        JwtSettings {
            algorithms: Vec::new(),
            secret_files: Vec::new(),
            secrets: Vec::new(),
            public_key_files: Vec::new(),
            jwks_file: None,
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway: Duration::from_secs(60),
            require_exp: true,
            user_claim: "sub".into(),
        }
    }
}

impl fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSettings")
            .field("algorithms", &self.algorithms)
            .field("secret_files", &self.secret_files)
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .field("public_key_files", &self.public_key_files)
            .field("jwks_file", &self.jwks_file)
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("leeway", &self.leeway)
            .field("require_exp", &self.require_exp)
            .field("user_claim", &self.user_claim)
            .finish()
    }
}

impl JwtSettings {
    /// The `jsonwebtoken` checks for tokens signed with `alg`.
    pub(crate) fn validation_for(&self, alg: Algorithm, leeway: u64) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = Vec::new();
        if self.require_exp {
            required.push("exp");
        }
        if !self.issuers.is_empty() {
            validation.set_issuer(&self.issuers);
            required.push("iss");
        }
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}
