//! Reading processes from /proc, to seed the process table with what ran before the sensor.

use std::path::Path;

/// What /proc says about one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcSnapshot {
    pub pid: u32,
    pub ppid: u32,
    /// Start time in clock ticks since boot (field 22 of `stat`).
    pub start_ticks: u64,
    pub comm: String,
    /// `None` for kernel threads and processes whose exe cannot be read.
    pub exe: Option<String>,
    pub argv: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
}

/// `(comm, ppid, start_ticks)` from the text of `/proc/PID/stat`. The comm is in parentheses
/// and may itself contain spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(stat: &str) -> Option<(String, u32, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    // After ") ": state(3) ppid(4) ... starttime(22): index 0 is field 3.
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let ppid = rest.get(1)?.parse().ok()?;
    let start = rest.get(19)?.parse().ok()?;
    Some((comm, ppid, start))
}

/// Real and effective ids from a `Uid:`/`Gid:` line of `/proc/PID/status`.
fn ids(status: &str, key: &str) -> (u32, u32) {
    let line = status.lines().find(|l| l.starts_with(key));
    let mut f = line.into_iter().flat_map(|l| l.split_whitespace().skip(1));
    let real = f.next().and_then(|v| v.parse().ok()).unwrap_or(u32::MAX);
    let eff = f.next().and_then(|v| v.parse().ok()).unwrap_or(u32::MAX);
    (real, eff)
}

/// Reads one process; `None` when it vanished or is unreadable.
pub fn read_process(proc_root: &Path, pid: u32) -> Option<ProcSnapshot> {
    let dir = proc_root.join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let (comm, ppid, start_ticks) = parse_stat(&stat)?;
    let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
    let (uid, euid) = ids(&status, "Uid:");
    let (gid, egid) = ids(&status, "Gid:");
    let exe = std::fs::read_link(dir.join("exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let argv = std::fs::read(dir.join("cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    Some(ProcSnapshot {
        pid,
        ppid,
        start_ticks,
        comm,
        exe,
        argv,
        uid,
        gid,
        euid,
        egid,
    })
}

/// Every process under `proc_root` (normally `/proc`).
pub fn scan(proc_root: &Path) -> Vec<ProcSnapshot> {
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        tracing::warn!(path = %proc_root.display(), "cannot list processes");
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| read_process(proc_root, pid))
        .collect()
}

/// Clock ticks per second (`USER_HZ`), the unit of /proc start times.
/// The thread group (process) of task `tid`, from `/proc/TID/status`; None when it is gone.
pub fn tgid_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

pub fn ticks_per_second() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => hz as u64,
        _ => 100,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_hostile_comm() {
        let line = "1234 (a) b (c) S 77 1234 1234 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 98765 0 0";
        assert_eq!(parse_stat(line), Some(("a) b (c".to_owned(), 77, 98765)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let snap = read_process(Path::new("/proc"), me).expect("own process readable");
        assert_eq!(snap.pid, me);
        assert_eq!(snap.ppid, nix::unistd::getppid().as_raw() as u32);
        assert!(snap.exe.is_some());
        assert!(!snap.argv.is_empty());
    }
}

/// A socket from `/proc/net/{tcp,tcp6,udp,udp6}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetSocket {
    pub protocol: &'static str,
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
    /// TCP LISTEN (or an unconnected UDP socket).
    pub listening: bool,
}

/// `0100007F:1F90` (IPv4) or 32 hex digits + port (IPv6), as /proc/net prints them.
fn parse_hex_addr(field: &str) -> Option<std::net::SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The sockets of one `/proc/net` table, by inode.
pub fn parse_net_table(text: &str, protocol: &'static str) -> Vec<(u64, NetSocket)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local = parse_hex_addr(f.get(1)?)?;
            let remote = parse_hex_addr(f.get(2)?)?;
            let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
            let inode: u64 = f.get(9)?.parse().ok()?;
            let listening = if protocol == "tcp" {
                state == 0x0a
            } else {
                remote.port() == 0
            };
            (inode != 0).then_some((
                inode,
                NetSocket {
                    protocol,
                    local,
                    remote,
                    listening,
                },
            ))
        })
        .collect()
}

/// Every TCP and UDP socket of the host's network namespace, by inode.
pub fn net_sockets(proc_root: &Path) -> std::collections::HashMap<u64, NetSocket> {
    let mut out = std::collections::HashMap::new();
    for (file, protocol) in [
        ("tcp", "tcp"),
        ("tcp6", "tcp"),
        ("udp", "udp"),
        ("udp6", "udp"),
    ] {
        if let Ok(text) = std::fs::read_to_string(proc_root.join("net").join(file)) {
            out.extend(parse_net_table(&text, protocol));
        }
    }
    out
}

/// Inodes of the sockets process `pid` holds open.
pub fn socket_inodes(proc_root: &Path, pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let target = std::fs::read_link(e.ok()?.path()).ok()?;
        let t = target.to_str()?;
        t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
    })
    .collect()
}

#[cfg(test)]
mod net_tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0000000000000000 100 0 0 10 0\n";
        let socks = parse_net_table(text, "tcp");
        assert_eq!(socks.len(), 2);
        assert_eq!(socks[0].0, 12345);
        assert_eq!(socks[0].1.local.to_string(), "127.0.0.1:8080");
        assert!(socks[0].1.listening);
        assert_eq!(socks[1].1.remote.to_string(), "127.0.0.1:8080");
        assert!(!socks[1].1.listening);
        let v6 = parse_hex_addr("00000000000000000000000001000000:0016").expect("v6");
        assert_eq!(v6.to_string(), "[::1]:22");
    }
}
