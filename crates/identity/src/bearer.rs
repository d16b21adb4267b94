//! The `Authorization: Bearer` scheme.

/// Extracts the token from an `Authorization` header value:
/// `"Bearer <token>"`, the scheme case-insensitive, surrounding whitespace
/// allowed. `None` for another scheme, an empty token, or a token with
/// spaces, control or non-ASCII characters.
pub fn bearer(header_value: &[u8]) -> Option<&str> {
    let value = header_value.trim_ascii();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii_start();
    if token.len() == rest.len() || token.is_empty() || !token.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    std::str::from_utf8(token).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::bearer;

    proptest! {
        #[test]
        fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = bearer(&input);
        }

        #[test]
        fn finds_any_token68(
            scheme in "(?i)bearer",
            before in "[ \\t]{0,3}",
            sep in "[ \\t]{1,3}",
            after in "[ \\t]{0,3}",
            token in "[A-Za-z0-9._~+/-]{1,40}=*",
        ) {
            let value = format!("{before}{scheme}{sep}{token}{after}");
            prop_assert_eq!(bearer(value.as_bytes()), Some(token.as_str()));
        }

        #[test]
        fn result_is_visible_ascii(input in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some(token) = bearer(&input) {
                prop_assert!(!token.is_empty());
                prop_assert!(token.bytes().all(|b| b.is_ascii_graphic()));
            }
        }
    }
}
