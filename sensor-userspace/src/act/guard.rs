//! What is never touched: pid 1, the sensor, kernel threads, the policy's protected processes
//! and paths, the sensor's own files, and the system's own binaries and libraries (a rule must
//! never be able to quarantine or block `/bin/sh`).

use std::path::Path;

use crate::{detect::SensorSelf, policy::Policy};

/// Why an action was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("pid 1 is never touched")]
    Init,
    #[error("the sensor itself is never touched")]
    Sensor,
    #[error("pid {0} is a kernel thread")]
    KernelThread(u32),
    #[error("{0} is a protected process (policy protected.processes)")]
    ProtectedProcess(String),
    #[error("{0} is a protected path (policy protected.paths)")]
    ProtectedPath(String),
    #[error("{0} is one of the sensor's own files")]
    SensorFile(String),
    #[error("{0} is a system binary or library; it is left to a person")]
    SystemPath(String),
}

/// Directories whose files came with the system.
const SYSTEM_DIRS: &[&str] = &[
    "/bin/",
    "/sbin/",
    "/lib/",
    "/lib32/",
    "/lib64/",
    "/usr/bin/",
    "/usr/sbin/",
    "/usr/lib/",
    "/usr/lib32/",
    "/usr/lib64/",
    "/usr/libexec/",
    "/boot/",
];

/// Whether a process may be signalled.
pub fn process(pid: u32, policy: &Policy, me: &SensorSelf) -> Result<(), Refusal> {
    if pid <= 1 {
        return Err(Refusal::Init);
    }
    if pid == me.pid {
        return Err(Refusal::Sensor);
    }
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let exe = std::fs::read_link(proc_dir.join("exe")).ok();
    let ppid = std::fs::read_to_string(proc_dir.join("stat"))
        .ok()
        .and_then(|s| crate::host::procfs::parse_stat(&s))
        .map(|(_, ppid, _)| ppid);
    // Kernel threads have no executable and descend from kthreadd (pid 2).
    if pid == 2 || (exe.is_none() && ppid == Some(2)) {
        return Err(Refusal::KernelThread(pid));
    }
    if let Some(exe) = exe {
        let exe = exe.to_string_lossy();
        if me.owns(&exe) && pid != me.pid {
            // Another instance of the sensor binary (the CLI) is fine to leave alone too.
            return Err(Refusal::Sensor);
        }
        if policy.protects_process(&exe) {
            return Err(Refusal::ProtectedProcess(exe.into_owned()));
        }
    }
    Ok(())
}

/// Whether a file may be moved, rewritten or blocked.
pub fn path(path: &str, policy: &Policy, me: &SensorSelf) -> Result<(), Refusal> {
    if policy.protects_path(path) {
        return Err(Refusal::ProtectedPath(path.to_owned()));
    }
    if me.owns(path) {
        return Err(Refusal::SensorFile(path.to_owned()));
    }
    if SYSTEM_DIRS.iter().any(|d| path.starts_with(d)) {
        return Err(Refusal::SystemPath(path.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_never_touched() {
        let policy = Policy::shipped().expect("policy");
        let me = SensorSelf {
            pid: std::process::id(),
            paths: vec!["/var/lib/vigil/".into()],
            ..SensorSelf::default()
        };
        assert_eq!(process(1, &policy, &me), Err(Refusal::Init));
        assert_eq!(process(me.pid, &policy, &me), Err(Refusal::Sensor));
        assert_eq!(process(2, &policy, &me), Err(Refusal::KernelThread(2)));
        assert!(matches!(
            path("/bin/sh", &policy, &me),
            Err(Refusal::SystemPath(_))
        ));
        assert!(matches!(
            path("/usr/lib/x86_64-linux-gnu/libc.so.6", &policy, &me),
            Err(Refusal::SystemPath(_))
        ));
        assert!(matches!(
            path("/boot/vmlinuz", &policy, &me),
            Err(Refusal::ProtectedPath(_))
        ));
        assert!(matches!(
            path("/var/lib/vigil/actions.jsonl", &policy, &me),
            Err(Refusal::SensorFile(_))
        ));
        assert_eq!(path("/tmp/payload", &policy, &me), Ok(()));
        assert_eq!(path("/usr/local/bin/dropped", &policy, &me), Ok(()));
    }
}
