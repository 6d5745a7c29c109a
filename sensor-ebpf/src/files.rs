//! Following a task's fd table to files, inodes and sockets, at offsets resolved from BTF.

use sensor_common::syscall::SyscallHead;

use crate::{maps::config, task::field};

const S_IFMT: u32 = 0o170000;
const S_IFSOCK: u32 = 0o140000;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The `struct file *` behind `fd` in `task`'s fd table, or null.
#[inline(always)]
pub fn fd_file(task: *const u8, fd: u64) -> *const u8 {
    let l = &config().files;
    // SAFETY: probe reads only; any bad pointer on the way yields null.
    unsafe {
        let files = field::<u64>(task, l.task_files) as *const u8;
        let fdt = field::<u64>(files, l.files_fdt) as *const u8;
        let max: u32 = field(fdt, l.fdt_max_fds);
        if files.is_null() || fdt.is_null() || fd >= u64::from(max) || fd > 0xffff {
            return core::ptr::null();
        }
        let arr = field::<u64>(fdt, l.fdt_fd) as *const u8;
        field::<u64>(arr, (fd as u32) * 8) as *const u8
    }
}

/// What an inode is.
#[derive(Clone, Copy, Default)]
pub struct InodeInfo {
    pub ino: u64,
    pub dev: u32,
    pub mode: u32,
    pub rdev: u32,
    pub nlink: u32,
}

/// Everything [`InodeInfo`] holds about the inode behind `file`.
#[inline(always)]
pub fn inode_of(file: *const u8) -> InodeInfo {
    let inode = file_inode(file);
    let mut info = inode_id(inode);
    if !inode.is_null() {
        let l = &config().files;
        // SAFETY: probe reads only.
        unsafe {
            info.rdev = field(inode, l.inode_rdev);
            info.nlink = field(inode, l.inode_nlink);
        }
    }
    info
}

/// The inode behind `file` (`file->f_inode`), or null.
#[inline(always)]
pub fn file_inode(file: *const u8) -> *const u8 {
    if file.is_null() {
        return core::ptr::null();
    }
    // SAFETY: probe read; a bad pointer yields null.
    unsafe { field::<u64>(file, config().files.file_inode) as *const u8 }
}

/// Number, device and mode of `inode` only (2 fewer reads than [`inode_of`]).
#[inline(always)]
pub fn inode_id(inode: *const u8) -> InodeInfo {
    if inode.is_null() {
        return InodeInfo::default();
    }
    let l = &config().files;
    // SAFETY: probe reads only.
    unsafe {
        let sb = field::<u64>(inode, l.inode_sb) as *const u8;
        InodeInfo {
            ino: field(inode, l.inode_ino),
            dev: field(sb, l.sb_dev),
            mode: u32::from(field::<u16>(inode, l.inode_mode)),
            rdev: 0,
            nlink: 0,
        }
    }
}

/// The name of a file's dentry starts with `prefix`.
#[inline(always)]
pub fn dentry_name_starts_with(file: *const u8, prefix: &[u8; 6]) -> bool {
    let l = &config().files;
    // SAFETY: probe reads only.
    unsafe {
        let dentry = field::<u64>(file, l.file_dentry) as *const u8;
        let name = field::<u64>(dentry, l.dentry_name) as *const u8;
        !name.is_null() && field::<[u8; 6]>(name, 0) == *prefix
    }
}

/// Copies the name of `file`'s dentry (its last path component) into `dst` (at most `cap`
/// bytes with the NUL); its length without the NUL, 0 when there is none.
#[inline(always)]
pub fn dentry_name_into(file: *const u8, dst: *mut u8, cap: u32) -> u16 {
    if file.is_null() {
        return 0;
    }
    let l = &config().files;
    // SAFETY: probe reads only; the caller passes `cap` bytes at `dst`.
    unsafe {
        let dentry = field::<u64>(file, l.file_dentry) as *const u8;
        let name = field::<u64>(dentry, l.dentry_name) as *const u8;
        if name.is_null() {
            return 0;
        }
        let n =
            aya_ebpf::helpers::generated::bpf_probe_read_kernel_str(dst.cast(), cap, name.cast());
        if n <= 1 { 0 } else { (n - 1) as u16 }
    }
}

/// Fills the socket fields of `head` from the socket behind `file` (if it is one).
#[inline(always)]
pub fn fill_socket(file: *const u8, head: *mut SyscallHead) {
    if file.is_null() || inode_of(file).mode & S_IFMT != S_IFSOCK {
        return;
    }
    let l = &config().files;
    // SAFETY: probe reads from kernel memory; writes go to the caller's scratch record.
    unsafe {
        let socket = field::<u64>(file, l.file_private_data) as *const u8;
        let sk = field::<u64>(socket, l.socket_sk) as *const u8;
        if sk.is_null() {
            return;
        }
        let family: u16 = field(sk, l.sk_family);
        (*head).sock_family = family;
        (*head).sock_type = field(sk, l.sk_type);
        (*head).sock_protocol = field(sk, l.sk_protocol);
        (*head).local_port = field(sk, l.sk_num);
        (*head).remote_port = u16::from_be(field(sk, l.sk_dport));
        if family == AF_INET6 {
            (*head).local_addr = field(sk, l.sk_v6_rcv_saddr);
            (*head).remote_addr = field(sk, l.sk_v6_daddr);
        } else if family == AF_INET {
            let local: [u8; 4] = field(sk, l.sk_rcv_saddr);
            let remote: [u8; 4] = field(sk, l.sk_daddr);
            (&raw mut (*head).local_addr).cast::<[u8; 4]>().write(local);
            (&raw mut (*head).remote_addr)
                .cast::<[u8; 4]>()
                .write(remote);
        }
    }
}
