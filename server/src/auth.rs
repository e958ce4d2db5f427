//! The bearer-token check of `--auth-token`.
//!
//! The comparison runs in time independent of where the presented token
//! first differs (`subtle`), so response timing does not leak the token a
//! byte at a time. Only the token's length can be learned, which is why the
//! README asks for a long random token.

use subtle::ConstantTimeEq;

/// Whether `presented` is exactly `expected`.
pub fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    presented.ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        assert!(token_matches(b"s3cret", b"s3cret"));
        for wrong in [&b""[..], b"s3cre", b"s3cret ", b"S3cret", b"s3crex"] {
            assert!(!token_matches(wrong, b"s3cret"));
        }
    }
}
