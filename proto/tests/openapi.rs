//! `ubroker-proto` against `openapi.yaml`, the contract's machine-readable
//! form: the same codes (each way), the same statuses, the same retry
//! advice where the contract gives it, and the same queue-name pattern.
//! Read as text (the file's layout is ours): no YAML parser needed.

use std::collections::BTreeSet;

use ubroker_proto::{Code, Retry, QUEUE_NAME_PATTERN};

fn openapi() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml");
    std::fs::read_to_string(path).expect("openapi.yaml beside the workspace")
}

/// The lines of the `Error` schema, up to the next schema (a key indented
/// by four spaces) or section.
fn error_schema(text: &str) -> Vec<&str> {
    let next_key = |l: &str| {
        let indent = l.len() - l.trim_start().len();
        indent <= 4 && l.trim_end().ends_with(':')
    };
    let mut lines = text.lines().skip_while(|l| l.trim_end() != "    Error:");
    let head = lines.next().expect("an Error schema");
    std::iter::once(head)
        .chain(lines.take_while(|l| !next_key(l)))
        .collect()
}

/// The `enum` list of the `Error` schema's `code`.
fn listed_codes(schema: &[&str]) -> BTreeSet<String> {
    schema
        .iter()
        .skip_while(|l| l.trim() != "enum:")
        .skip(1)
        .map(|l| l.trim())
        .take_while(|l| l.starts_with("- "))
        .map(|l| l.trim_start_matches("- ").to_owned())
        .collect()
}

/// The `` `code` (NNN[, advice]`` pairs of the `code` description.
fn described(schema: &[&str]) -> Vec<(String, u16, Option<String>)> {
    let text: String = schema
        .iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ");
    let mut found = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find('`') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('`') else { break };
        let name = &after[..end];
        let tail = &after[end + 1..];
        rest = tail;
        let Some(paren) = tail.strip_prefix(" (") else {
            continue;
        };
        let digits: String = paren.chars().take_while(char::is_ascii_digit).collect();
        if digits.len() != 3 || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let after_status = &paren[3..];
        let advice = after_status
            .strip_prefix(", ")
            .map(|a| a.split([')', ';', ':']).next().unwrap_or("").to_owned());
        found.push((name.to_owned(), digits.parse().unwrap(), advice));
    }
    found
}

/// Every error status a route lists (`'4xx':`, `'5xx':` keys).
fn response_statuses(text: &str) -> BTreeSet<u16> {
    text.lines()
        .filter_map(|l| {
            let key = l.trim().strip_prefix('\'')?.strip_suffix("':")?;
            let status: u16 = key.parse().ok()?;
            (status >= 400).then_some(status)
        })
        .collect()
}

#[test]
fn the_codes_are_the_ones_openapi_lists_each_way() {
    let text = openapi();
    let listed = listed_codes(&error_schema(&text));
    let ours: BTreeSet<String> = Code::ALL.iter().map(|c| c.as_str().to_owned()).collect();
    assert_eq!(
        ours.difference(&listed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "codes in ubroker-proto that openapi.yaml does not list"
    );
    assert_eq!(
        listed.difference(&ours).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "codes in openapi.yaml that ubroker-proto does not know"
    );
}

#[test]
fn every_status_and_retry_advice_openapi_gives_is_the_codes() {
    let text = openapi();
    let described = described(&error_schema(&text));
    assert!(
        described.len() >= 10,
        "the Error description names codes with statuses: {described:?}"
    );
    for (name, status, advice) in &described {
        let code = Code::parse(name).unwrap_or_else(|| panic!("{name} is not a code"));
        assert_eq!(code.status(), *status, "{name}");
        match advice.as_deref() {
            Some(a) if a.starts_with("retry") => {
                assert_eq!(code.retry(), Retry::Later, "{name}: {a}")
            }
            Some(a) if a.starts_with("do not retry") => {
                assert_eq!(code.retry(), Retry::Never, "{name}: {a}")
            }
            _ => {}
        }
    }
    // Every code a client retries on is described with its advice.
    for code in Code::ALL.into_iter().filter(|c| c.retry() == Retry::Later) {
        assert!(
            described
                .iter()
                .any(|(name, _, advice)| name == code.as_str()
                    && advice.as_deref().is_some_and(|a| a.starts_with("retry"))),
            "{code} is retried but openapi.yaml does not say so"
        );
    }
    // Every error status a route answers is one some code is answered with.
    let ours: BTreeSet<u16> = Code::ALL
        .iter()
        .flat_map(|c| c.statuses().iter().copied())
        .collect();
    for status in response_statuses(&text) {
        assert!(
            ours.contains(&status),
            "openapi.yaml answers {status}, no code has it"
        );
    }
}

#[test]
fn the_queue_name_pattern_is_openapis() {
    let text = openapi();
    let patterns: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pattern: '"))
        .filter_map(|p| p.strip_suffix('\''))
        .filter(|p| p.starts_with("^[A-Za-z0-9_-]"))
        .collect();
    let base = QUEUE_NAME_PATTERN.replace(r"(\.dead)?", "");
    assert!(!patterns.is_empty());
    for pattern in patterns {
        assert!(
            pattern == QUEUE_NAME_PATTERN || pattern == base,
            "openapi.yaml's {pattern} is neither {QUEUE_NAME_PATTERN} nor {base}"
        );
    }
    assert!(text.contains(&format!("pattern: '{QUEUE_NAME_PATTERN}'")));
}
