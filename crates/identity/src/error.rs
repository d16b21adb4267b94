//! Why a token was refused.
//!
//! [`JwtError`]'s `Display` text is meant for clients (it never contains key
//! material or token content); [`JwtError::code`] is a short stable label for
//! logs and metrics.

use jsonwebtoken::errors::ErrorKind;

/// Why [`JwtValidator::validate`](crate::JwtValidator::validate) refused a
/// token.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Not a compact JWS (three base64url parts with JSON header and
    /// payload), an algorithm this crate does not know (including `none`),
    /// or a registered claim of the wrong type (e.g. a string `exp`).
    #[error("malformed token")]
    Malformed,
    /// No candidate key verifies the signature.
    #[error("invalid token signature")]
    BadSignature,
    /// `exp` is in the past, beyond the allowed leeway.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future, beyond the allowed leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not one of the accepted issuers.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// `aud` names none of the accepted audiences.
    #[error("token audience not accepted")]
    WrongAudience,
    /// No configured key fits the token (its `kid` and algorithm).
    #[error("token signing key not recognised")]
    UnknownKey,
    /// The header names an algorithm that is not allowed by the settings.
    #[error("token algorithm not allowed")]
    AlgorithmNotAllowed,
    /// A required claim (`exp`, `iss` or `aud`) is absent, or not of its
    /// type (e.g. a string `exp`); holds the claim's name.
    #[error("token lacks the `{0}` claim")]
    MissingClaim(String),
}

impl JwtError {
    /// A short, stable, snake_case label for logs and metrics, e.g.
    /// `"expired"`.
    pub fn code(&self) -> &'static str {
        match self {
            JwtError::Malformed => "malformed",
            JwtError::BadSignature => "bad_signature",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::WrongIssuer => "wrong_issuer",
            JwtError::WrongAudience => "wrong_audience",
            JwtError::UnknownKey => "unknown_key",
            JwtError::AlgorithmNotAllowed => "algorithm_not_allowed",
            JwtError::MissingClaim(_) => "missing_claim",
        }
    }
}

/// Whether a `jsonwebtoken` error means "this key does not verify this
/// token", so that the next candidate key may be tried.
pub(crate) fn is_key_mismatch(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidKeyFormat
    )
}

/// Maps a `jsonwebtoken` error to ours.
pub(crate) fn from_kind(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::InvalidAlgorithm => JwtError::AlgorithmNotAllowed,
        ErrorKind::MissingRequiredClaim(claim) => JwtError::MissingClaim(claim.clone()),
        kind if is_key_mismatch(kind) => JwtError::BadSignature,
        _ => JwtError::Malformed,
    }
}
