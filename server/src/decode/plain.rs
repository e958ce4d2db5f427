//! Hand readers of the commonest request bodies, tried before serde: a
//! single publish `{"body":"plain text"}` and a batch settle
//! `{"ids":[1,2,3]}`. Each reads only that exact form (JSON whitespace
//! between tokens allowed) and returns `None` for anything else, which then
//! takes serde's path and gets its answer, errors included; every body they
//! accept is one serde reads to the same value (the unit tests hold the two
//! together). serde's visitors were most of a single publish's decoding and
//! 13% of a batch fetch + settle.

/// Moves `at` past JSON whitespace.
fn skip_space(raw: &[u8], at: &mut usize) {
    while raw
        .get(*at)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        *at += 1;
    }
}

/// Skips whitespace, then whether `token` is next (moving past it).
fn expect(raw: &[u8], at: &mut usize, token: &[u8]) -> bool {
    skip_space(raw, at);
    let found = raw.get(*at..*at + token.len()) == Some(token);
    *at += token.len();
    found
}

/// `{"body":"..."}` whose string is printable ASCII with nothing to
/// unescape: the string's bytes, or `None`.
pub(super) fn body(raw: &[u8]) -> Option<&[u8]> {
    // The form clients write, with no whitespace: two fixed ends and one
    // branch-free pass over the text, which the compiler vectorises.
    match raw
        .strip_prefix(b"{\"body\":\"")
        .and_then(|rest| rest.strip_suffix(b"\"}"))
    {
        Some(text) => plain_text(text).then_some(text),
        None => spaced_body(raw),
    }
}

/// Whether `text` needs no unescaping and is valid inside a JSON string:
/// printable ASCII, no `"` and no `\`.
fn plain_text(text: &[u8]) -> bool {
    !text.iter().fold(false, |special, &b| {
        special | !(b' '..=b'~').contains(&b) | (b == b'"') | (b == b'\\')
    })
}

/// [`body`] with JSON whitespace between the tokens.
fn spaced_body(raw: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    let opening: [&[u8]; 4] = [b"{", b"\"body\"", b":", b"\""];
    if !opening.iter().all(|token| expect(raw, &mut at, token)) {
        return None;
    }
    let start = at;
    let len = raw.get(start..)?.iter().position(|&b| b == b'"')?;
    let end = start + len;
    if !plain_text(&raw[start..end]) {
        return None;
    }
    at = end;
    if !(expect(raw, &mut at, b"\"") && expect(raw, &mut at, b"}")) {
        return None;
    }
    skip_space(raw, &mut at);
    (at == raw.len()).then(|| &raw[start..end])
}

/// `u64::MAX`).
pub(super) fn ids(raw: &[u8]) -> Option<Vec<u64>> {
    let mut at = 0;
    let skip = |at: &mut usize| skip_space(raw, at);
    let expect = |at: &mut usize, token: &[u8]| expect(raw, at, token);
    let opening: [&[u8]; 4] = [b"{", b"\"ids\"", b":", b"["];
    if !opening.iter().all(|token| expect(&mut at, token)) {
        return None;
    }
    let mut ids = Vec::with_capacity(raw.len() / 2);
    loop {
        skip(&mut at);
        let start = at;
        let mut id: u64 = 0;
        while let Some(digit) = raw.get(at).filter(|b| b.is_ascii_digit()) {
            id = id.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
            at += 1;
        }
        // No digits, or a leading zero (JSON has none): serde's answer.
        if at == start || (raw[start] == b'0' && at - start > 1) {
            return None;
        }
        ids.push(id);
        skip(&mut at);
        match raw.get(at) {
            Some(b',') => at += 1,
            Some(b']') => {
                at += 1;
                break;
            }
            _ => return None,
        }
    }
    if !expect(&mut at, b"}") {
        return None;
    }
    skip(&mut at);
    (at == raw.len()).then_some(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct IdsRequest {
        ids: Vec<u64>,
    }

    #[test]
    fn bodies_are_read_as_serde_reads_them_or_left_to_it() {
        #[derive(serde::Deserialize)]
        struct One {
            body: String,
        }
        let serde = |raw: &[u8]| -> Option<String> {
            let text = std::str::from_utf8(raw).ok()?;
            serde_json::from_str::<One>(text).ok().map(|one| one.body)
        };
        let accepted: &[&[u8]] = &[
            br#"{"body":"012345678901234567890123456789"}"#,
            br#"{"body":""}"#,
            b" \t{\r\n\"body\" : \"a b ~ ! '}{][\" }\n",
        ];
        for raw in accepted {
            let plain = body(raw).map(|b| String::from_utf8(b.to_vec()).unwrap());
            assert!(plain.is_some(), "{:?}", String::from_utf8_lossy(raw));
            assert_eq!(plain, serde(raw), "{:?}", String::from_utf8_lossy(raw));
        }
        let declined: &[&[u8]] = &[
            br#"{"body":"a\"b"}"#,
            br#"{"body":"a\nb"}"#,
            b"{\"body\":\"a\tb\"}",
            "{\"body\":\"é\"}".as_bytes(),
            b"{\"body\":\"\xff\"}",
            br#"{"body":"a","x":1}"#,
            br#"{"body":"a","x":"b"}"#,
            br#"{"body":"a\\"}"#,
            br#"{"body":"a" ,"x":"b"}"#,
            br#"{"x":1,"body":"a"}"#,
            br#"{"body":"a","body":"b"}"#,
            br#"{"body":1}"#,
            br#"{"body":"a"}x"#,
            br#"{"body":"a""#,
            br#"{"body":"a"#,
            br#"{"messages":[]}"#,
            br#"["body"]"#,
            b"",
        ];
        for raw in declined {
            assert_eq!(body(raw), None, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn ids_are_read_as_serde_reads_them_or_left_to_it() {
        let serde = |raw: &[u8]| -> Option<Vec<u64>> {
            let text = std::str::from_utf8(raw).ok()?;
            serde_json::from_str::<IdsRequest>(text).ok().map(|r| r.ids)
        };
        let accepted: &[&[u8]] = &[
            br#"{"ids":[1]}"#,
            br#"{"ids":[0,18446744073709551615,3,3]}"#,
            b" \t\r\n{ \"ids\" :\n[ 1 , 2 ,3 ] }\n ",
            br#"{"ids":[10,200,3000]}"#,
        ];
        for raw in accepted {
            let plain = ids(raw);
            assert!(plain.is_some(), "{:?}", String::from_utf8_lossy(raw));
            assert_eq!(plain, serde(raw), "{:?}", String::from_utf8_lossy(raw));
        }
        let declined: &[&[u8]] = &[
            br#"{"ids":[]}"#,
            br#"{"ids":[01]}"#,
            br#"{"ids":[-1]}"#,
            br#"{"ids":[1e3]}"#,
            br#"{"ids":[1.0]}"#,
            br#"{"ids":[18446744073709551616]}"#,
            br#"{"ids":[1,]}"#,
            br#"{"ids":[1] ,"x":1}"#,
            br#"{"x":1,"ids":[1]}"#,
            br#"{"ids":[1]"#,
            br#"{"ids":[1]}x"#,
            b"{\"ids\":[1]}\x0c",
            br#"{"ids":["1"]}"#,
            br#"{"id":[1]}"#,
            br#"[1]"#,
            b"",
        ];
        for raw in declined {
            assert_eq!(ids(raw), None, "{:?}", String::from_utf8_lossy(raw));
        }
    }
}
