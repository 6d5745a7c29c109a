//! Graph deltas on their way to the controller: numbered, kept until acknowledged, bounded.
//! While the link is down they pile up; past the bound the oldest go first, and are counted
//! (the controller shows the count per host). A delta sent but not acknowledged when a link
//! drops is sent again on the next one; the controller ignores what it already applied.

use std::collections::VecDeque;

use crate::clock::unix_now_ns;

/// Bytes of deltas kept at most.
const MAX_BYTES: usize = 64 << 20;

#[derive(Default)]
pub struct GraphBuffer {
    /// (seq, encoded delta, sent on this link).
    queue: VecDeque<(u64, Vec<u8>, bool)>,
    bytes: usize,
    last_seq: u64,
    dropped: u64,
}

impl GraphBuffer {
    /// Numbers a delta (wall-clock nanoseconds, so numbers keep growing across restarts) and
    /// keeps it, dropping the oldest past the bound.
    pub fn push(&mut self, delta: Vec<u8>) {
        self.last_seq = unix_now_ns().max(self.last_seq + 1);
        self.bytes += delta.len();
        self.queue.push_back((self.last_seq, delta, false));
        while self.bytes > MAX_BYTES
            && let Some((_, d, _)) = self.queue.pop_front()
        {
            self.bytes -= d.len();
            self.dropped += 1;
        }
    }

    /// The controller holds everything up to `seq`.
    pub fn acked(&mut self, seq: u64) {
        while self.queue.front().is_some_and(|(s, _, _)| *s <= seq) {
            if let Some((_, d, _)) = self.queue.pop_front() {
                self.bytes -= d.len();
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_oldest_go_first_past_the_bound() {
        let mut g = GraphBuffer::default();
        for _ in 0..5 {
            g.push(vec![0; MAX_BYTES / 4]);
        }
        assert!(g.dropped() >= 1);
        assert!(g.bytes <= MAX_BYTES);
    }
}
