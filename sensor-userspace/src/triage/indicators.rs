//! Indicators: what an incident left on a host, derived from its alerts, and the look on the
//! host as it is now that verification makes before the controller releases it.
//!
//! The controller derives them ([`of_alert`]) from the alerts it holds; the sensor answers
//! ([`look`]) from its process table, the filesystem, `/proc/net` and, for persistence files,
//! the baseline of what they held before.

use std::{collections::BTreeSet, net::SocketAddr, path::Path};

use sensor_common::protocol::{Indicator, Presence};

use crate::{
    host::procfs,
    model::events::{Event, What},
    model::process_table::{ProcessKey, ProcessTable},
    triage::alerts::Alert,
};

/// Where a payload run from is itself an indicator: world-writable staging directories.
const STAGING: &[&str] = &["/tmp/", "/var/tmp/", "/dev/shm/"];

/// The indicators of one alert: the processes involved, the files they wrote, created,
/// renamed into place or made executable, an executable run from a staging directory, and
/// the remote endpoints they talked to (loopback aside).
pub fn of_alert(alert: &Alert) -> BTreeSet<Indicator> {
    let mut out = BTreeSet::new();
    let p = &alert.finding.process;
    out.insert(Indicator::Process {
        pid: p.pid,
        start: p.start,
        exe: p.exe.clone(),
    });
    for e in &alert.finding.evidence {
        of_event(e, &mut out);
    }
    out
}

/// One thing an incident's process did, as far as indicators go.
#[derive(Clone, Copy, Debug)]
pub enum Act<'a> {
    /// Wrote, created, renamed into place or made executable this file.
    Wrote(&'a str),
    /// Ran this executable.
    Ran(&'a str),
    /// Connected to or accepted from this endpoint.
    Talked(std::net::SocketAddr),
}

/// What an act left that a release looks for: the one mapping the sensor's alerts and the
/// controller's hunt hits share. A file written is left behind; a program run is only when
/// it runs from a staging directory (a system binary the attacker ran is not theirs to take
/// away); an endpoint other than loopback is one while a connection to it is open.
pub fn of_act(act: Act<'_>) -> Option<Indicator> {
    match act {
        Act::Wrote(path) if path.starts_with('/') => Some(Indicator::File {
            path: path.to_owned(),
        }),
        Act::Ran(exe) if STAGING.iter().any(|d| exe.starts_with(d)) => Some(Indicator::File {
            path: exe.to_owned(),
        }),
        Act::Talked(addr) if !addr.ip().to_canonical().is_loopback() => {
            Some(Indicator::Endpoint { addr })
        }
        _ => None,
    }
}

fn of_event(e: &Event, out: &mut BTreeSet<Indicator>) {
    let act = match &e.what {
        What::Open {
            file: f,
            write,
            create,
            ..
        } if *write || *create => f.path.as_deref().map(Act::Wrote),
        What::Rename { to, .. } => to.path.as_deref().map(Act::Wrote),
        What::Chmod { file: f, .. } => f.path.as_deref().map(Act::Wrote),
        What::Exec { .. } => e.exe.as_deref().map(Act::Ran),
        What::Connect { net } | What::Accept { net } => net.remote.map(Act::Talked),
        _ => None,
    };
    out.extend(act.and_then(of_act));
    out.insert(Indicator::Process {
        pid: e.pid,
        start: e.start,
        exe: e.exe.clone(),
    });
}

/// Files larger than this are named in an alert's payloads but not hashed.
pub const MAX_PAYLOAD_BYTES: u64 = 16 << 20;

/// At most this many payloads are hashed per alert.
const MAX_PAYLOADS: usize = 8;

/// The files `alert` names as written or run (its file indicators), each with the SHA-256
/// of its content now, or, for one the response moved away, the hash `moved` knows for it.
pub fn payloads(
    alert: &Alert,
    moved: impl Fn(&str) -> Option<String>,
) -> Vec<crate::triage::alerts::Payload> {
    use crate::triage::alerts::Payload;
    of_alert(alert)
        .into_iter()
        .filter_map(|i| match i {
            Indicator::File { path } => Some(path),
            _ => None,
        })
        .take(MAX_PAYLOADS)
        .map(|path| {
            let meta = std::fs::metadata(&path);
            let size = meta.as_ref().ok().map(std::fs::Metadata::len);
            let (sha256, unhashed) = match meta {
                Ok(m) if !m.is_file() => (None, Some("not a regular file".to_owned())),
                Ok(m) if m.len() > MAX_PAYLOAD_BYTES => (
                    None,
                    Some(format!("{} bytes, over {MAX_PAYLOAD_BYTES}", m.len())),
                ),
                Ok(_) => match crate::host::hash::sha256(Path::new(&path)) {
                    Ok(h) => (Some(h), None),
                    Err(e) => (None, Some(e.to_string())),
                },
                Err(_) => match moved(&path) {
                    Some(h) => (Some(h), None),
                    None => (None, Some("gone before it was hashed".to_owned())),
                },
            };
            Payload {
                path,
                sha256,
                size,
                unhashed,
            }
        })
        .collect()
}

/// What verification consults on the host.
pub struct Host<'a> {
    pub table: &'a ProcessTable,
    pub proc_root: &'a Path,
    /// For a persistence file the sensor knows from before: the lines it holds now that it
    /// did not then. None for any other file.
    pub residue: &'a dyn Fn(&str) -> Option<std::io::Result<Vec<String>>>,
}

/// The indicators present on the host now, each with what was seen.
pub fn look(indicators: &[Indicator], host: &Host<'_>) -> Vec<Presence> {
    let mut open: Option<Vec<SocketAddr>> = None;
    indicators
        .iter()
        .filter_map(|i| {
            let detail = match i {
                Indicator::File { path } => file_present(path, host)?,
                Indicator::Process { pid, start, .. } => {
                    let key = ProcessKey {
                        pid: *pid,
                        start: *start,
                    };
                    let p = host.table.live(*pid).filter(|p| p.key == key)?;
                    if !host.proc_root.join(pid.to_string()).exists() {
                        return None;
                    }
                    let line = if p.argv.is_empty() {
                        p.comm.clone()
                    } else {
                        p.argv.join(" ")
                    };
                    format!("still running: {line}")
                }
                Indicator::Endpoint { addr } => {
                    let open = open.get_or_insert_with(|| established(host.proc_root));
                    let want = (addr.ip().to_canonical(), addr.port());
                    open.iter()
                        .any(|r| (r.ip().to_canonical(), r.port()) == want)
                        .then(|| "a connection to it is open".to_owned())?
                }
            };
            Some(Presence {
                indicator: i.clone(),
                detail,
            })
        })
        .collect()
}

fn file_present(path: &str, host: &Host<'_>) -> Option<String> {
    match (host.residue)(path) {
        Some(Ok(lines)) if lines.is_empty() => None,
        Some(Ok(lines)) => Some(format!(
            "still holds {} line(s) it did not hold before: {}",
            lines.len(),
            lines
                .iter()
                .map(|l| format!("{:?}", l.trim_end()))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
        Some(Err(e)) => Some(format!("cannot be read to check it ({e})")),
        None => match std::fs::symlink_metadata(path) {
            Ok(m) => Some(format!("exists ({} bytes)", m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(format!("cannot be checked ({e})")),
        },
    }
}

/// Remote ends of the TCP connections of the sensor's network namespace that are not
/// listening sockets.
fn established(proc_root: &Path) -> Vec<SocketAddr> {
    procfs::net_sockets(proc_root)
        .into_values()
        .filter(|s| s.protocol == "tcp" && !s.listening && s.remote.port() != 0)
        .map(|s| s.remote)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_run_is_an_indicator_only_from_a_staging_directory() {
        assert_eq!(
            of_act(Act::Ran("/tmp/x/payload")),
            Some(Indicator::File {
                path: "/tmp/x/payload".into()
            })
        );
        assert_eq!(
            of_act(Act::Ran("/usr/bin/bash")),
            None,
            "a system binary stays"
        );
        assert!(of_act(Act::Wrote("/etc/cron.d/x")).is_some());
        assert_eq!(of_act(Act::Wrote("relative")), None);
        let out: std::net::SocketAddr = "203.0.113.7:4444".parse().expect("addr");
        assert_eq!(
            of_act(Act::Talked(out)),
            Some(Indicator::Endpoint { addr: out })
        );
        let lo: std::net::SocketAddr = "127.0.0.1:80".parse().expect("addr");
        assert_eq!(of_act(Act::Talked(lo)), None);
    }
}
