//! Size limits of the records. Anything longer is truncated and the truncation is flagged.

/// Length of a task's `comm` (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;
/// Bytes kept of an executed file's path (as the kernel's `sched_process_exec` reports it).
pub const FILENAME_LEN: usize = 512;
/// Most arguments kept from an argument vector.
pub const ARGS_MAX: usize = 32;
/// Bytes of argument text (NUL-separated) the kernel collects before it stops adding arguments.
pub const ARGS_CAP: usize = 4096;
/// Size of the argument buffer: one argument of up to `ARGS_CAP` bytes may start anywhere
/// below `ARGS_CAP`, so the buffer is twice that (this is also what lets the verifier prove
/// every copy stays in bounds).
pub const ARGS_BUF: usize = 2 * ARGS_CAP;
/// Bytes kept of each path of a syscall record (two paths at most: rename's old and new).
pub const PATH_CAP: usize = 1024;
/// Bytes of a file name (basename) compared against the sensitive-read set.
pub const SENSITIVE_NAME_LEN: usize = 32;
/// Bytes kept of a short string argument (a mount's file-system type).
pub const SHORT_STR: usize = 16;
/// Bytes of call-specific data a syscall record carries (an xattr value's head, two
/// timestamps, a new task name).
pub const EXTRA_LEN: usize = 32;
/// Environment variables scanned at exec for the allow-listed names.
pub const ENV_SCAN: usize = 128;
/// Bytes kept of the allow-listed environment variables of one exec (`NAME=value`, each
/// NUL-terminated).
pub const ENV_CAP: usize = 1024;
/// Bytes kept of one captured environment variable.
pub const ENV_VAR_CAP: usize = 256;
/// Bytes of a variable's name (with its `=`) that select it in the kernel: the first 8.
pub const ENV_KEY_LEN: usize = 8;
