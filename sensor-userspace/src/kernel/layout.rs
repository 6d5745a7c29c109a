//! Tracepoint field offsets, read from tracefs `format` files.

use std::path::{Path, PathBuf};

use sensor_common::config::{FIELD_ABSENT, TracepointLayout};

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "cannot read tracepoint format {path}: {source} (is tracefs mounted, and does this kernel have the tracepoint?)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tracepoint {tracepoint} has no field {field}")]
    NoField {
        tracepoint: &'static str,
        field: &'static str,
    },
}

/// A field's byte offset in a tracepoint `format` file, e.g. from
/// `field:pid_t old_pid; offset:16; size:4; signed:1;` (tab-separated).
pub fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.split_whitespace().last()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let off = rest
            .split(';')
            .find_map(|p| p.trim().strip_prefix("offset:"))?;
        off.trim().parse().ok()
    })
}

fn read_format(tracefs: &Path, tracepoint: &'static str) -> Result<String, LayoutError> {
    let path = tracefs.join("events").join(tracepoint).join("format");
    std::fs::read_to_string(&path).map_err(|source| LayoutError::Read { path, source })
}

fn required(
    format: &str,
    tracepoint: &'static str,
    field: &'static str,
) -> Result<u32, LayoutError> {
    field_offset(format, field).ok_or(LayoutError::NoField { tracepoint, field })
}

/// Resolves every tracepoint field the programs read.
pub fn tracepoint_layout(tracefs: &Path) -> Result<TracepointLayout, LayoutError> {
    const EXEC: &str = "sched/sched_process_exec";
    const EXIT: &str = "sched/sched_process_exit";
    const EXECVE: &str = "syscalls/sys_enter_execve";
    const EXECVEAT: &str = "syscalls/sys_enter_execveat";
    const EXIT_SYS: &str = "syscalls/sys_exit_openat";
    let exec = read_format(tracefs, EXEC)?;
    let exit_sys = read_format(tracefs, EXIT_SYS)?;
    let exit = read_format(tracefs, EXIT)?;
    let execve = read_format(tracefs, EXECVE)?;
    let execveat = read_format(tracefs, EXECVEAT)?;
    Ok(TracepointLayout {
        exec_filename: required(&exec, EXEC, "filename")?,
        exec_old_pid: required(&exec, EXEC, "old_pid")?,
        exit_group_dead: field_offset(&exit, "group_dead").unwrap_or(FIELD_ABSENT),
        execve_argv: required(&execve, EXECVE, "argv")?,
        execveat_argv: required(&execveat, EXECVEAT, "argv")?,
        execve_envp: required(&execve, EXECVE, "envp")?,
        execveat_envp: required(&execveat, EXECVEAT, "envp")?,
        syscall_ret: required(&exit_sys, EXIT_SYS, "ret")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXEC_FORMAT: &str = "name: sched_process_exec\nID: 300\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\
\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n\
\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;\n";

    #[test]
    fn parses_offsets() {
        assert_eq!(field_offset(EXEC_FORMAT, "filename"), Some(8));
        assert_eq!(field_offset(EXEC_FORMAT, "old_pid"), Some(16));
        assert_eq!(field_offset(EXEC_FORMAT, "pid"), Some(12));
        assert_eq!(field_offset(EXEC_FORMAT, "group_dead"), None);
        assert_eq!(
            field_offset("\tfield:char comm[16];\toffset:8;\tsize:16;", "comm"),
            Some(8)
        );
    }
}
