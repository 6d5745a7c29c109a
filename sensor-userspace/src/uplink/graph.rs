//! Graph deltas on their way to the controller: numbered, kept until acknowledged, bounded,
//! and spooled on disk (`STATE/graph-spool/`, one file per delta), so a sensor restart or a
//! long outage loses none that fit the bound. While the link is down they pile up; past the
//! bound the oldest go first, and are counted (the controller shows the count per host). A
//! delta sent but not acknowledged when a link drops is sent again on the next one; the
//! controller ignores what it already applied.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
};

use crate::host::clock::unix_now_ns;

/// Bytes of deltas kept at most.
const MAX_BYTES: usize = 64 << 20;

#[derive(Default)]
pub struct GraphBuffer {
    /// (seq, encoded delta, sent on this link).
    queue: VecDeque<(u64, Vec<u8>, bool)>,
    bytes: usize,
    last_seq: u64,
    dropped: u64,
    /// Where the deltas are spooled; None keeps them in memory only.
    spool: Option<PathBuf>,
}

/// Whether `bytes` is a graph delta the controller can decode.
fn decodes(bytes: &[u8]) -> bool {
    use sensor_common::wire::Versioned as _;
    sensor_common::wire::Delta::decode(bytes).is_ok()
}

fn file_of(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.delta"))
}

impl GraphBuffer {
    /// A buffer spooled in `dir`, holding what an earlier run left there (oldest first, up
    /// to the bound). A directory that cannot be made or read leaves the buffer in memory,
    /// with a log line.
    pub fn open(dir: &Path) -> Self {
        let mut b = Self::default();
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot spool graph deltas; they wait in memory");
            return b;
        }
        let mut held: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name();
                let seq = name.to_str()?.strip_suffix(".delta")?.parse().ok()?;
                Some((seq, e.path()))
            })
            .collect();
        held.sort_unstable();
        for (seq, path) in held {
            match std::fs::read(&path) {
                // A delta that no longer decodes (a corrupt disk, a file written by hand) would
                // end every connection the controller takes it on, and be sent again on the
                // next: set aside, named, and counted as dropped.
                Ok(d) if !decodes(&d) => {
                    let aside = path.with_extension("delta.unreadable");
                    let _ = std::fs::rename(&path, &aside);
                    b.dropped += 1;
                    tracing::warn!(path = %path.display(), kept = %aside.display(), "a spooled graph delta does not decode: set aside, counted as dropped");
                }
                Ok(d) => {
                    b.bytes += d.len();
                    b.last_seq = b.last_seq.max(seq);
                    b.queue.push_back((seq, d, false));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable spooled delta skipped")
                }
            }
        }
        if !b.queue.is_empty() {
            tracing::info!(
                deltas = b.queue.len(),
                bytes = b.bytes,
                "graph deltas from before the restart, still to send"
            );
        }
        b.spool = Some(dir.to_owned());
        b.trim();
        b
    }

    /// Numbers a delta (wall-clock nanoseconds, so numbers keep growing across restarts) and
    /// keeps it, dropping the oldest past the bound.
    pub fn push(&mut self, delta: Vec<u8>) {
        self.last_seq = unix_now_ns().max(self.last_seq + 1);
        if let Some(dir) = &self.spool {
            let path = file_of(dir, self.last_seq);
            let written = crate::host::durable::write_atomically(
                &path,
                &delta,
                0o600,
                crate::host::durable::Flush::Later,
            );
            if let Err(e) = written {
                tracing::warn!(error = %e, "cannot spool a graph delta; it waits in memory");
            }
        }
        self.bytes += delta.len();
        self.queue.push_back((self.last_seq, delta, false));
        self.trim();
    }

    fn forget_front(&mut self) -> bool {
        let Some((seq, d, _)) = self.queue.pop_front() else {
            return false;
        };
        self.bytes -= d.len();
        if let Some(dir) = &self.spool {
            let _ = std::fs::remove_file(file_of(dir, seq));
        }
        true
    }

    fn trim(&mut self) {
        while self.bytes > MAX_BYTES && self.forget_front() {
            self.dropped += 1;
        }
    }

    /// The controller holds everything up to `seq`.
    pub fn acked(&mut self, seq: u64) {
        while self.queue.front().is_some_and(|(s, _, _)| *s <= seq) {
            self.forget_front();
        }
    }

    /// Deltas not yet sent on this link, marked sent.
    pub fn unsent(&mut self) -> Vec<(u64, Vec<u8>)> {
        self.queue
            .iter_mut()
            .filter(|q| !q.2)
            .map(|q| {
                q.2 = true;
                (q.0, q.1.clone())
            })
            .collect()
    }

    /// A new link: everything still held goes again.
    pub fn relink(&mut self) {
        for q in &mut self.queue {
            q.2 = false;
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The deltas held (spooled, waiting for the controller's acknowledgement) and their bytes.
    pub fn held(&self) -> (usize, usize) {
        (self.queue.len(), self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use sensor_common::wire::{Delta, GRAPH_SCHEMA_VERSION, Versioned as _};

    use super::*;

    /// An encoded (empty) delta numbered `n`.
    fn delta(n: u64) -> Vec<u8> {
        Delta {
            version: GRAPH_SCHEMA_VERSION,
            seq: n,
            upserted: Vec::new(),
            removed: Vec::new(),
            edges: Vec::new(),
        }
        .encode()
        .expect("encode")
    }

    #[test]
    fn a_spooled_delta_that_does_not_decode_is_set_aside_and_counted() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("graph-spool");
        let mut g = GraphBuffer::open(&dir);
        g.push(delta(1));
        g.push(delta(2));
        drop(g);
        // One file corrupted, one cut short (as a disk fault would leave them).
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        std::fs::write(&files[0], b"\xff\x00 not a delta").expect("corrupt");
        let whole = std::fs::read(&files[1]).expect("read");
        std::fs::write(&files[1], &whole[..whole.len() / 2]).expect("cut");
        let mut again = GraphBuffer::open(&dir);
        assert!(
            again.unsent().is_empty(),
            "nothing that cannot decode is sent"
        );
        assert_eq!(again.dropped(), 2, "both are counted");
        let aside = std::fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".unreadable"))
            .count();
        assert_eq!(aside, 2, "kept aside, by name");
    }

    #[test]
    fn deltas_wait_for_their_ack_and_go_again_on_a_new_link() {
        let mut g = GraphBuffer::default();
        g.push(vec![1]);
        g.push(vec![2]);
        let sent = g.unsent();
        assert_eq!(sent.len(), 2);
        assert!(sent[0].0 < sent[1].0);
        assert!(g.unsent().is_empty(), "sent once per link");
        g.acked(sent[0].0);
        g.relink();
        let again = g.unsent();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1, vec![2]);
    }

    #[test]
    fn spooled_deltas_outlive_a_restart_until_acknowledged() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("graph-spool");
        let mut g = GraphBuffer::open(&dir);
        g.push(delta(1));
        g.push(delta(2));
        g.push(delta(3));
        let first = g.unsent()[0].0;
        g.acked(first);
        drop(g);
        let mut again = GraphBuffer::open(&dir);
        let left: Vec<Vec<u8>> = again.unsent().into_iter().map(|(_, d)| d).collect();
        assert_eq!(
            left,
            vec![delta(2), delta(3)],
            "the acknowledged one is gone"
        );
        again.push(delta(4));
        let seqs: Vec<u64> = {
            again.relink();
            again.unsent().into_iter().map(|(s, _)| s).collect()
        };
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "numbers keep growing: {seqs:?}"
        );
        again.acked(u64::MAX);
        assert_eq!(
            std::fs::read_dir(&dir).expect("dir").count(),
            0,
            "nothing left on disk"
        );
    }

    #[test]
    fn the_oldest_go_first_past_the_bound() {
        let mut g = GraphBuffer::default();
        for _ in 0..5 {
            g.push(vec![0; MAX_BYTES / 4]);
        }
        assert!(g.dropped() >= 1);
        assert!(g.bytes <= MAX_BYTES);
    }
}
