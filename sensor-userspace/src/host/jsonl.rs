//! JSON-lines files (the alert log, the action journal, the uplink's streams): a record is a
//! line that ends in a newline. A line that does not end in one was torn by a crash or a full
//! disk and is not a record yet; a line that is not JSON of the record's schema (or not even
//! UTF-8) is counted and skipped, never fatal, so one bad byte cannot stop a reader.

use std::{io::BufRead, path::Path};

/// Reads the next complete line of `r` into `line` (its newline removed): `Some(n)` with the
/// bytes consumed, or `None` at the end or at a torn last line, which stays for a later read.
pub fn next_line(r: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    line.clear();
    let n = r.read_until(b'\n', line)?;
    if n == 0 || line.last() != Some(&b'\n') {
        return Ok(None);
    }
    line.pop();
    Ok(Some(n))
}

/// What a JSON-lines file held: its records, and how many lines could not be read.
#[derive(Debug)]
pub struct Read<T> {
    pub records: Vec<T>,
    /// Complete lines that are not a record (not JSON, not this schema, not UTF-8).
    pub unreadable: usize,
    /// Whether the file ends in a torn line (no newline), skipped.
    pub torn: bool,
}

/// Reads every record of a JSON-lines file; a missing file holds none.
pub fn read<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Read<T>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Read {
                records: Vec::new(),
                unreadable: 0,
                torn: false,
            });
        }
        Err(e) => return Err(e),
    };
    let mut r = std::io::BufReader::new(file);
    let (mut records, mut unreadable, mut line) = (Vec::new(), 0, Vec::new());
    while next_line(&mut r, &mut line)?.is_some() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(&line) {
            Ok(rec) => records.push(rec),
            Err(_) => unreadable += 1,
        }
    }
    Ok(Read {
        records,
        unreadable,
        torn: !line.iter().all(u8::is_ascii_whitespace),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct R {
        a: u32,
    }

    #[test]
    fn bad_lines_are_counted_and_a_torn_tail_is_not_a_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.jsonl");
        let mut bytes = b"{\"a\":1}\n\n{\"a\":\"\xff\"}\nnot json\n{\"a\":2}\n".to_vec();
        bytes.extend_from_slice(b"{\"a\":3");
        std::fs::write(&path, bytes).expect("write");
        let got: Read<R> = read(&path).expect("read");
        assert_eq!(got.records, vec![R { a: 1 }, R { a: 2 }]);
        assert_eq!(
            got.unreadable, 2,
            "the non-UTF-8 line and the line that is not JSON"
        );
        assert!(got.torn);
        let none: Read<R> = read(&dir.path().join("missing")).expect("missing is empty");
        assert!(none.records.is_empty() && !none.torn);
    }
}
