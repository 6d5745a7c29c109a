//! Process lifecycle: fork (new processes only), exec (image and argument vector), exit.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_user,
        generated::{bpf_probe_read_kernel_str, bpf_probe_read_user_str},
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::{RawTracePointContext, TracePointContext},
};
use sensor_common::{
    config::FIELD_ABSENT,
    limits::{
        ARGS_BUF, ARGS_CAP, ARGS_MAX, ENV_CAP, ENV_KEY_LEN, ENV_SCAN, ENV_VAR_CAP, FILENAME_LEN,
    },
    process::{ExecArgsHead, ExecEnvHead, ExecEnvRecord, ExecRecord, ExitRecord, ForkRecord},
    record::{EventKind, flags},
    stats::Counter,
};

use crate::{
    files::{dentry_name_starts_with, fd_file, inode_of},
    maps::{ARGS_SCRATCH, EVENTS, config, count, header, is_own, wakeup},
    task::{field, task_info},
};

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`, as a raw
/// tracepoint because only it hands over the child's `task_struct` (needed to tell a new
/// process from a new thread, and to read the child's identity).
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn vigil_fork(ctx: RawTracePointContext) -> i32 {
    let child = ctx.arg::<u64>(1) as *const u8;
    let info = task_info(child);
    if info.pid != info.tgid {
        return 0; // a thread, not a process
    }
    if is_own(EventKind::Fork) {
        return 0;
    }
    match EVENTS.reserve::<ForkRecord>(0) {
        Some(mut entry) => {
            entry.write(ForkRecord {
                header: header(EventKind::Fork, 0),
                task: info,
            });
            entry.submit(wakeup());
        }
        None => count(EventKind::Fork, Counter::RingFull),
    }
    0
}

#[tracepoint]
pub fn vigil_exec(ctx: TracePointContext) -> u32 {
    if is_own(EventKind::Exec) {
        return 0;
    }
    let tp = &config().tracepoints;
    // SAFETY: the current task pointer is valid while this program runs.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // SAFETY: bounded reads of the tracepoint's context; `src` points into it (the
    // `__data_loc` filename).
    let (loc, src) = unsafe {
        let loc: u32 = ctx.read_at(tp.exec_filename as usize).unwrap_or(0);
        let src = ctx.as_ptr().cast::<u8>().add((loc & 0xffff) as usize);
        (loc, src)
    };
    // The image actually executed. Enforcement comes first, before any ring space is
    // asked for: a full ring (a consumer that crashed, a storm) must never let a blocked
    // image run.
    let fl_cfg = &config().files;
    // SAFETY: probe reads at the offsets BTF gave; a null pointer reads as nothing.
    let exe = unsafe {
        let mm = field::<u64>(task, fl_cfg.task_mm) as *const u8;
        field::<u64>(mm, fl_cfg.mm_exe_file) as *const u8
    };
    let exe_inode = inode_of(exe);
    let blocked = crate::enforce::exec_blocked(exe_inode.ino, exe_inode.dev, src);
    if blocked {
        crate::enforce::kill_current();
    }
    let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
        count(EventKind::Exec, Counter::RingFull);
        return 0;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at a reserved, exclusively owned ExecRecord; fields are written
    // through raw pointers without forming references to uninitialised memory, and the
    // context reads are bounded probe reads.
    unsafe {
        let old_pid: u32 = ctx.read_at(tp.exec_old_pid as usize).unwrap_or(0);
        let src_len = (loc >> 16) as usize;
        let copied = bpf_probe_read_kernel_str(
            (&raw mut (*rec).filename).cast(),
            FILENAME_LEN as u32,
            src.cast(),
        );
        let filename_len = if copied > 0 { copied as u32 - 1 } else { 0 };
        let mut fl = if src_len > FILENAME_LEN {
            flags::FILENAME_TRUNCATED
        } else {
            0
        };
        if !exe.is_null() && exe_inode.nlink == 0 {
            fl |= flags::EXE_UNLINKED;
        }
        if !exe.is_null() && dentry_name_starts_with(exe, b"memfd:") {
            fl |= flags::EXE_MEMFD;
        }
        if blocked {
            fl |= flags::EXEC_BLOCKED;
        }
        (&raw mut (*rec).exe_ino).write(exe_inode.ino);
        (&raw mut (*rec).exe_dev).write(exe_inode.dev);
        let mut i = 0;
        while i < 3 {
            let stdio = inode_of(fd_file(task, i as u64));
            (&raw mut (*rec).stdio_mode[i]).write(stdio.mode);
            (&raw mut (*rec).stdio_rdev[i]).write(stdio.rdev);
            (&raw mut (*rec).stdio_ino[i]).write(stdio.ino);
            i += 1;
        }
        (&raw mut (*rec).header).write(header(EventKind::Exec, fl));
        (&raw mut (*rec).task).write(task_info(task));
        (&raw mut (*rec).old_pid).write(old_pid);
        (&raw mut (*rec).filename_len).write(filename_len);
    }
    entry.submit(crate::maps::wakeup_now());
    0
}

#[tracepoint]
pub fn vigil_exit(ctx: TracePointContext) -> u32 {
    let gd_off = config().tracepoints.exit_group_dead;
    let last_thread = if gd_off != FIELD_ABSENT {
        // SAFETY: bounded probe read of the tracepoint record.
        unsafe { ctx.read_at::<u8>(gd_off as usize) }.unwrap_or(0) != 0
    } else {
        // Older kernels: report when the leader exits.
        let id = bpf_get_current_pid_tgid();
        id as u32 == (id >> 32) as u32
    };
    if !last_thread || is_own(EventKind::Exit) {
        return 0;
    }
    // SAFETY: the current task pointer is valid while this program runs.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let exit_code: u32 = {
        let off = config().task.exit_code as usize;
        // SAFETY: probe read; a fault yields 0.
        unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(task.add(off).cast::<u32>()) }
            .unwrap_or(0)
    };
    match EVENTS.reserve::<ExitRecord>(0) {
        Some(mut entry) => {
            entry.write(ExitRecord {
                header: header(EventKind::Exit, 0),
                task: task_info(task),
                exit_code,
                _pad: 0,
            });
            entry.submit(wakeup());
        }
        None => count(EventKind::Exit, Counter::RingFull),
    }
    0
}

#[tracepoint]
pub fn vigil_execve(ctx: TracePointContext) -> u32 {
    let tp = &config().tracepoints;
    exec_env(&ctx, tp.execve_envp);
    exec_args(&ctx, tp.execve_argv);
    0
}

#[tracepoint]
pub fn vigil_execveat(ctx: TracePointContext) -> u32 {
    let tp = &config().tracepoints;
    exec_env(&ctx, tp.execveat_envp);
    exec_args(&ctx, tp.execveat_argv);
    0
}

/// The environment variables captured at exec, by the first [`ENV_KEY_LEN`] bytes of
/// `NAME=` (zero-padded after the `=`). Filled by the loader from the configured allow list.
#[map]
static ENV_NAMES: HashMap<[u8; ENV_KEY_LEN], u8> = HashMap::with_max_entries(64, 0);

/// Scratch for an environment record, and (after it) for a variable's key.
#[map]
static ENV_SCRATCH: PerCpuArray<ExecEnvRecord> = PerCpuArray::with_max_entries(1, 0);

/// Scratch for one variable's key, and the scan's running totals. The totals live in map
/// memory, not registers, so the verifier does not tell apart (and multiply) the states of
/// every combination of hits: each iteration is checked once.
#[repr(C)]
struct EnvScan {
    key: [u8; 16],
    len: u64,
    found: u64,
    flags: u64,
}

#[map]
static ENV_STATE: PerCpuArray<EnvScan> = PerCpuArray::with_max_entries(1, 0);

/// The kernel's key of an environment string's first 8 bytes (`word`, little-endian): the
/// bytes up to and including the first `=`, the rest zeroed; all 8 when there is no `=` in
/// them. Branch-free: the classic zero-byte test finds the `=` bytes, and the lowest one
/// sets the mask.
#[inline(always)]
fn env_key(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let x = word ^ (ONES * u64::from(b'='));
    let eq = x.wrapping_sub(ONES) & !x & HIGHS;
    let lowest = eq & eq.wrapping_neg();
    word & (lowest << 1).wrapping_sub(1)
}

/// Scans up to [`ENV_SCAN`] variables of the exec's environment and sends the allow-listed
/// ones (an [`ExecEnvRecord`]) when there is at least one: most execs send nothing.
#[inline(always)]
fn exec_env(ctx: &TracePointContext, envp_off: u32) {
    if is_own(EventKind::ExecEnv) {
        return;
    }
    let (Some(rec), Some(st)) = (ENV_SCRATCH.get_ptr_mut(0), ENV_STATE.get_ptr_mut(0)) else {
        return;
    };
    // SAFETY: `rec` and `st` are this CPU's scratch; user memory is read with probe-read
    // helpers; every write into `env` starts below ENV_CAP (masked) and is at most
    // ENV_VAR_CAP long, inside the ENV_CAP + ENV_VAR_CAP buffer.
    unsafe {
        let envp = ctx.read_at::<u64>(envp_off as usize).unwrap_or(0) as *const u64;
        if envp.is_null() {
            return;
        }
        let env = (&raw mut (*rec).env).cast::<u8>();
        let key = (&raw mut (*st).key).cast::<u8>();
        (*st).len = 0;
        (*st).found = 0;
        (*st).flags = 0;
        let mut i: usize = 0;
        while i < ENV_SCAN {
            let Ok(p) = bpf_probe_read_user(envp.add(i)) else {
                break;
            };
            if p == 0 {
                break;
            }
            i += 1;
            key.cast::<[u64; 2]>().write([0, 0]);
            if bpf_probe_read_user_str(key.cast(), ENV_KEY_LEN as u32 + 1, p as *const _) <= 1 {
                continue;
            }
            let word = env_key(key.cast::<u64>().read());
            key.cast::<u64>().write(word);
            #[expect(
                clippy::needless_borrows_for_generic_args,
                reason = "look the key up in place in scratch space, not as a copy on the 512-byte stack"
            )]
            let wanted = ENV_NAMES
                .get_ptr(&*key.cast::<[u8; ENV_KEY_LEN]>())
                .is_some();
            if !wanted {
                continue;
            }
            let len = core::ptr::read_volatile(&raw const (*st).len) as usize;
            if len >= ENV_CAP {
                (*st).flags |= u64::from(flags::ENV_TRUNCATED);
                break;
            }
            let m = bpf_probe_read_user_str(
                env.add(len & (ENV_CAP - 1)).cast(),
                ENV_VAR_CAP as u32,
                p as *const _,
            );
            if m <= 0 {
                continue;
            }
            if m as usize >= ENV_VAR_CAP {
                (*st).flags |= u64::from(flags::ENV_TRUNCATED);
            }
            (*st).len = (len + m as usize) as u64;
            (*st).found += 1;
        }
        let found = core::ptr::read_volatile(&raw const (*st).found);
        if found == 0 {
            return;
        }
        let mut fl = core::ptr::read_volatile(&raw const (*st).flags) as u16;
        if i == ENV_SCAN && bpf_probe_read_user(envp.add(ENV_SCAN)).unwrap_or(0u64) != 0 {
            fl |= flags::ENV_TRUNCATED;
        }
        let len = core::ptr::read_volatile(&raw const (*st).len) as usize;
        let len = if len > ENV_CAP + ENV_VAR_CAP {
            ENV_CAP + ENV_VAR_CAP
        } else {
            len
        };
        (&raw mut (*rec).head).write(ExecEnvHead {
            header: crate::maps::header(EventKind::ExecEnv, fl),
            task: task_info(bpf_get_current_task() as *const u8),
            count: found as u32,
            env_len: len as u32,
        });
        let total = core::mem::size_of::<ExecEnvHead>() + len;
        let bytes = core::slice::from_raw_parts(rec.cast::<u8>(), total);
        if EVENTS.output::<[u8]>(bytes, wakeup()).is_err() {
            count(EventKind::ExecEnv, Counter::RingFull);
        }
    }
}

/// Collects the argument vector at syscall entry into per-CPU scratch space, then sends only
/// the bytes used.
#[inline(always)]
fn exec_args(ctx: &TracePointContext, argv_off: u32) {
    if is_own(EventKind::ExecArgs) {
        return;
    }
    let Some(rec) = ARGS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `rec` is this CPU's scratch record, exclusively ours for the program's run; all
    // user memory is read with probe-read helpers, and every write into `args` starts below
    // ARGS_CAP and is at most ARGS_CAP long, inside the 2 * ARGS_CAP buffer.
    unsafe {
        let argv = ctx.read_at::<u64>(argv_off as usize).unwrap_or(0) as *const u64;
        let args = (&raw mut (*rec).args).cast::<u8>();
        let mut len: usize = 0;
        let mut argc: u32 = 0;
        let mut fl: u16 = 0;
        let mut i: usize = 0;
        while i < ARGS_MAX {
            let Ok(p) = bpf_probe_read_user(argv.add(i)) else {
                fl |= flags::ARGV_UNREADABLE;
                break;
            };
            if p == 0 {
                break;
            }
            if len >= ARGS_CAP {
                fl |= flags::ARGV_TRUNCATED;
                break;
            }
            let n = bpf_probe_read_user_str(
                args.add(len & (ARGS_CAP - 1)).cast(),
                ARGS_CAP as u32,
                p as *const _,
            );
            if n <= 0 {
                fl |= flags::ARGV_UNREADABLE;
                break;
            }
            if n as usize >= ARGS_CAP {
                fl |= flags::ARG_TRUNCATED;
            }
            len += n as usize;
            argc += 1;
            i += 1;
        }
        if i == ARGS_MAX && bpf_probe_read_user(argv.add(ARGS_MAX)).unwrap_or(0u64) != 0 {
            fl |= flags::ARGV_TRUNCATED;
        }
        let len = if len > ARGS_BUF { ARGS_BUF } else { len };
        (&raw mut (*rec).head).write(ExecArgsHead {
            header: crate::maps::header(EventKind::ExecArgs, fl),
            task: task_info(bpf_get_current_task() as *const u8),
            argc,
            args_len: len as u32,
        });
        let total = core::mem::size_of::<ExecArgsHead>() + len;
        let bytes = core::slice::from_raw_parts(rec.cast::<u8>(), total);
        if EVENTS.output::<[u8]>(bytes, wakeup()).is_err() {
            count(EventKind::ExecArgs, Counter::RingFull);
        }
    }
}
