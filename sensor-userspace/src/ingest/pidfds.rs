//! Which process each pidfd names: learnt from the `pidfd_open` calls the sensor saw, so a
//! later `pidfd_getfd` or `pidfd_send_signal` is tied to its target even when the caller
//! closed the pidfd before the sensor could read `/proc/PID/fdinfo` (what a careful tamperer
//! does). `/proc` is asked first: it is right while the pidfd is open, and a number reused
//! for a pidfd the sensor did not see open (`clone(CLONE_PIDFD)`, one passed over a socket)
//! is then not misread.

use std::collections::BTreeMap;

use super::interpret::Resolver;
use crate::model::events::What;

/// More pidfds than any host holds open at once: past it the oldest knowledge is dropped
/// and `/proc` alone resolves.
const CAPACITY: usize = 8192;

#[derive(Default)]
pub struct Pidfds {
    /// (process, descriptor) -> the process it names.
    opened: BTreeMap<(u32, i32), u32>,
}

impl Pidfds {
    /// Learns the pidfd a successful `pidfd_open` of process `pid` returned.
    pub fn learn(&mut self, pid: u32, what: &What, ret: i64) {
        let What::PidfdOpen { target_pid } = what else {
            return;
        };
        let (Ok(fd), Ok(target)) = (i32::try_from(ret), u32::try_from(*target_pid)) else {
            return;
        };
        if fd < 0 {
            return;
        }
        if self.opened.len() >= CAPACITY {
            tracing::debug!(
                held = self.opened.len(),
                "pidfd table full: /proc alone resolves pidfds now"
            );
            self.opened.clear();
        }
        self.opened.insert((pid, fd), target);
    }

    /// Forgets the pidfds of a process that exited.
    pub fn forget(&mut self, pid: u32) {
        let gone: Vec<_> = self
            .opened
            .range((pid, i32::MIN)..=(pid, i32::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            self.opened.remove(&k);
        }
    }

    /// `inner`, with the pidfds learnt here as the fallback for its pidfd look-ups.
    pub fn over<'a>(&'a self, inner: &'a dyn Resolver) -> WithPidfds<'a> {
        WithPidfds {
            inner,
            pidfds: self,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.opened.len()
    }
}

pub struct WithPidfds<'a> {
    inner: &'a dyn Resolver,
    pidfds: &'a Pidfds,
}

impl Resolver for WithPidfds<'_> {
    fn dir(&self, pid: u32, dirfd: i32) -> Option<String> {
        self.inner.dir(pid, dirfd)
    }

    fn pidfd_target(&self, pid: u32, fd: i32) -> Option<u32> {
        self.inner
            .pidfd_target(pid, fd)
            .or_else(|| self.pidfds.opened.get(&(pid, fd)).copied())
    }

    fn thread_group(&self, tid: u32) -> Option<u32> {
        self.inner.thread_group(tid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::interpret::NoResolver;

    #[test]
    fn a_pidfd_seen_opened_names_its_process_until_its_owner_exits() {
        let mut p = Pidfds::default();
        p.learn(100, &What::PidfdOpen { target_pid: 4242 }, 5);
        // A failed open learns nothing.
        p.learn(100, &What::PidfdOpen { target_pid: 7 }, -1);
        p.learn(101, &What::PidfdOpen { target_pid: 9 }, 5);
        let r = p.over(&NoResolver);
        assert_eq!(r.pidfd_target(100, 5), Some(4242));
        assert_eq!(r.pidfd_target(101, 5), Some(9), "per process");
        assert_eq!(r.pidfd_target(100, 6), None);
        p.forget(100);
        assert_eq!(p.over(&NoResolver).pidfd_target(100, 5), None);
        assert_eq!(p.len(), 1, "the other process's pidfd stays");
    }

    #[test]
    fn proc_is_asked_first() {
        let proc = crate::ingest::interpret::Fixed {
            pidfd: Some((5, 1)),
            ..Default::default()
        };
        let mut p = Pidfds::default();
        p.learn(100, &What::PidfdOpen { target_pid: 4242 }, 5);
        assert_eq!(p.over(&proc).pidfd_target(100, 5), Some(1));
    }
}
