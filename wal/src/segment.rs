//! Segment files: `00000000000000000042.wal`, named by their sequence
//! number, each starting with a 16-byte header (magic, version, number)
//! followed by records. [`scan`] reads one up to its first bad record.

use bytes::Bytes;

use crate::record::{decode, Decoded, Record};

/// Magic and format version.
const MAGIC: &[u8; 8] = b"UBWAL\0\0\x01";

/// The header's length.
pub const HEADER_LEN: usize = 16;

/// The file name of segment `number`.
pub fn name(number: u64) -> String {
    format!("{number:020}.wal")
}

/// The number of a segment file name, or `None` for any other file.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment `number`'s header.
pub fn header(number: u64) -> [u8; HEADER_LEN] {
    let mut out = [0; HEADER_LEN];
    out[..8].copy_from_slice(MAGIC);
    out[8..].copy_from_slice(&number.to_le_bytes());
    out
}

/// Where a scan stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRecord {
    pub offset: usize,
    pub reason: &'static str,
}

/// Calls `each(offset, record)` for every record of segment `number` in
/// order, up to the end or the first bad record (or a bad header, at offset
/// 0).
pub fn scan(
    data: &Bytes,
    number: u64,
    mut each: impl FnMut(usize, Record),
) -> Result<(), BadRecord> {
    if data.len() < HEADER_LEN || data[..HEADER_LEN] != header(number) {
        return Err(BadRecord {
            offset: 0,
            reason: "bad segment header",
        });
    }
    let mut at = HEADER_LEN;
    loop {
        match decode(data, at) {
            Decoded::End => return Ok(()),
            Decoded::Record(record, next) => {
                each(at, record);
                at = next;
            }
            Decoded::Bad(reason) => return Err(BadRecord { offset: at, reason }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_number_and_parse_back() {
        assert_eq!(name(42), "00000000000000000042.wal");
        assert_eq!(parse_name(&name(42)), Some(42));
        assert!(name(9) < name(10));
        for other in [
            "lock",
            "1.wal",
            "0000000000000000004x.wal",
            "00000000000000000042.tmp",
        ] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }

    #[test]
    fn a_header_of_another_segment_is_bad() {
        let data = Bytes::copy_from_slice(&header(3));
        assert_eq!(scan(&data, 3, |_, _| {}), Ok(()));
        assert_eq!(scan(&data, 4, |_, _| {}).unwrap_err().offset, 0);
    }
}
