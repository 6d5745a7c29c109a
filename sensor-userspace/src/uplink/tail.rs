//! Reading a JSON-lines file by line number, from where the controller's copy ends: lines are
//! numbered from 1, and only complete lines (ending in a newline) are ever sent.

use std::{
    io::{BufReader, Seek as _, SeekFrom},
    path::PathBuf,
};

use crate::host::jsonl;

use sensor_common::protocol::{MAX_FRAME, Stream};

/// Lines handed out per poll, so one poll never holds the whole backlog in memory.
const BATCH: usize = 512;

pub struct Tail {
    stream: Stream,
    path: PathBuf,
    /// The last line handed out.
    seq: u64,
    /// Where the next line starts.
    offset: u64,
}

impl Tail {
    /// Positions after line `held` (skipping what the controller already has).
    pub fn open(stream: Stream, path: PathBuf, held: u64) -> std::io::Result<Self> {
        let mut t = Self {
            stream,
            path,
            seq: 0,
            offset: 0,
        };
        let Ok(f) = std::fs::File::open(&t.path) else {
            return Ok(t); // not written yet
        };
        let mut r = BufReader::new(f);
        let mut line = Vec::new();
        while t.seq < held {
            let Some(n) = jsonl::next_line(&mut r, &mut line)? else {
                break;
            };
            t.seq += 1;
            t.offset += n as u64;
        }
        if t.seq < held {
            tracing::warn!(
                stream = stream.name(),
                held,
                lines = t.seq,
                "the controller holds more lines than this file has: it continues from its count"
            );
            t.seq = held;
        }
        Ok(t)
    }

    pub fn stream(&self) -> Stream {
        self.stream
    }

    /// The complete lines written since the last poll, numbered.
    pub fn poll(&mut self) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Ok(Vec::new());
        };
        if f.metadata()?.len() <= self.offset {
            return Ok(Vec::new());
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut r = BufReader::new(f);
        let mut out = Vec::new();
        while out.len() < BATCH {
            let mut line = Vec::new();
            let Some(n) = jsonl::next_line(&mut r, &mut line)? else {
                break; // the writer is mid-line: next poll
            };
            self.offset += n as u64;
            self.seq += 1;
            if line.len() > MAX_FRAME / 2 {
                tracing::warn!(
                    stream = self.stream.name(),
                    seq = self.seq,
                    bytes = line.len(),
                    "a record too large for one frame is sent truncated to a stub"
                );
                line = br#"{"error":"record too large to send"}"#.to_vec();
            }
            out.push((self.seq, line));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn lines_are_numbered_resumed_and_never_half_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alerts.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n{\"a\":").expect("write");
        let mut t = Tail::open(Stream::Alerts, path.clone(), 1).expect("open");
        let got = t.poll().expect("poll");
        assert_eq!(
            got,
            vec![(2, b"{\"a\":2}".to_vec()), (3, b"{\"a\":3}".to_vec())]
        );
        assert!(t.poll().expect("poll").is_empty(), "a half line waits");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"4}\n").expect("write");
        assert_eq!(t.poll().expect("poll"), vec![(4, b"{\"a\":4}".to_vec())]);
        let mut none = Tail::open(Stream::Actions, dir.path().join("missing"), 0).expect("open");
        assert!(none.poll().expect("poll").is_empty());
    }
}
