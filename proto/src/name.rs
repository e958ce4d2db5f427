//! The queue-name rule: 1 to [`MAX_QUEUE_NAME_LEN`] of `A-Z a-z 0-9 _ -`,
//! optionally followed by [`DEAD_SUFFIX`] (a dead-letter queue). Names are
//! taken byte for byte from the path: never percent-decoded.

/// The rule as `openapi.yaml` writes it (the `queue` path parameter).
pub const QUEUE_NAME_PATTERN: &str = r"^[A-Za-z0-9_-]{1,80}(\.dead)?$";

/// The most bytes of a name before its [`DEAD_SUFFIX`].
pub const MAX_QUEUE_NAME_LEN: usize = 80;

/// What a dead-letter queue's name ends with.
pub const DEAD_SUFFIX: &str = ".dead";

/// The name without its [`DEAD_SUFFIX`], if it has one.
#[inline]
pub fn base_of(name: &str) -> &str {
    name.strip_suffix(DEAD_SUFFIX).unwrap_or(name)
}

/// Whether `name` matches [`QUEUE_NAME_PATTERN`]. No allocation: every
/// request path calls it.
#[inline]
pub fn is_valid_queue_name(name: &str) -> bool {
    let base = base_of(name);
    !base.is_empty()
        && base.len() <= MAX_QUEUE_NAME_LEN
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_accepts_and_refuses_what_the_pattern_does() {
        let longest = "a".repeat(80);
        let too_long = "a".repeat(81);
        for good in [
            "a",
            "default",
            "Jobs_2-x",
            "jobs.dead",
            longest.as_str(),
            &format!("{longest}.dead"),
        ] {
            assert!(is_valid_queue_name(good), "{good:?}");
        }
        for bad in [
            "",
            ".dead",
            "a.dead.dead",
            "a.b",
            "a b",
            "a%2F",
            "é",
            "a/b",
            too_long.as_str(),
            &format!("{too_long}.dead"),
            "jobs.DEAD",
        ] {
            assert!(!is_valid_queue_name(bad), "{bad:?}");
        }
        assert_eq!(base_of("jobs.dead"), "jobs");
        assert_eq!(base_of("jobs"), "jobs");
    }
}
