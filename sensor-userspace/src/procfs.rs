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
