//! The bearer-token check of `--auth-token`.
//!
//! The comparison runs in time independent of where the presented token
//! first differs (`subtle`), so response timing does not leak the token a
//! byte at a time. Only the token's length can be learned, which is why the
//! docs/operations.md asks for a long random token.

use subtle::ConstantTimeEq;

/// The token of an `Authorization: Bearer <token>` value, if it is one.
///
/// The scheme is matched without regard to case and may be followed by
/// more than one space (RFC 9110, section 11.4: `auth-scheme [ 1*SP
/// token68 ]`, and schemes are case-insensitive).
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..6)?;
    let rest = value.get(6..)?;
    if !scheme.eq_ignore_ascii_case(b"Bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    rest.get(start..)
}

/// Whether `presented` is exactly `expected`.
pub fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    presented.ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for (value, token) in [
            (&b"Bearer abc"[..], Some(&b"abc"[..])),
            (b"bearer abc", Some(b"abc")),
            (b"BEARER   abc", Some(b"abc")),
            (b"Bearer", None),
            (b"Bearer ", None),
            (b"Bearerabc", None),
            (b"Basic abc", None),
            (b"", None),
        ] {
            assert_eq!(bearer_token(value), token, "{value:?}");
        }
    }

    #[test]
    fn only_the_exact_token_matches() {
        assert!(token_matches(b"s3cret", b"s3cret"));
        for wrong in [&b""[..], b"s3cre", b"s3cret ", b"S3cret", b"s3crex"] {
            assert!(!token_matches(wrong, b"s3cret"));
        }
    }
}
