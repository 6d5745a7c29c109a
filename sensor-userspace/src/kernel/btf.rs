//! `task_struct` and `cred` member offsets from the kernel's BTF. rustc emits no CO-RE
//! relocations, so the loader resolves the offsets here and hands them to the programs.
//!
//! This is a small reader of the BTF format (header, fixed-size type records, string table)
//! that indexes type positions and decodes only the structs it is asked about. A general BTF
//! library (btf-rs) decoded every type up front and held ~50 MB for a 5.5 MB vmlinux BTF; this
//! holds the file and a 4-byte index entry per type, and frees both once the layout is known.

use std::path::{Path, PathBuf};

use sensor_common::config::{FileLayout, REGS_SPAN_MAX, RegsLayout, TaskLayout};

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "no kernel BTF at {path}: the sensor needs a kernel built with CONFIG_DEBUG_INFO_BTF (Linux 5.8+)"
    )]
    Missing { path: PathBuf },
    #[error("cannot read the kernel BTF at {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse the kernel BTF at {path}: {reason}")]
    Parse { path: PathBuf, reason: Malformed },
    #[error("the kernel BTF has no struct {0}")]
    NoStruct(&'static str),
    #[error(
        "struct pt_regs spans {span} bytes between the syscall argument registers; at most {max} are read"
    )]
    RegsSpan { span: u32, max: u32 },
    #[error("struct {strukt} in the kernel BTF has no member {member}")]
    NoMember {
        strukt: &'static str,
        member: &'static str,
    },
}

/// What is wrong with a BTF blob.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("not BTF (bad magic)")]
    Magic,
    #[error("truncated header")]
    Header,
    #[error("the {0} section's offset or length overflows")]
    Overflow(&'static str),
    #[error("the {0} section runs past the end of the file")]
    PastEnd(&'static str),
    #[error("type section too large")]
    TooLarge,
    #[error("truncated type record")]
    Record,
    #[error("unknown BTF kind {0}")]
    Kind(u32),
}

/// One type record: where it starts and what it is.
#[derive(Clone, Copy)]
struct TypeRec {
    name_off: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    size_or_type: u32,
    /// Byte offset of the record's trailing data in the type section.
    data: usize,
}

/// A parsed BTF blob: the raw bytes plus an index from type id to record position.
pub struct KernelBtf {
    types: Vec<u8>,
    strings: Vec<u8>,
    /// `index[id - 1]` is the byte offset of type `id` in `types`.
    index: Vec<u32>,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

impl KernelBtf {
    pub fn open(path: &Path) -> Result<Self, BtfError> {
        if !path.exists() {
            return Err(BtfError::Missing {
                path: path.to_owned(),
            });
        }
        let raw = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&raw).map_err(|reason| BtfError::Parse {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses a little-endian BTF blob.
    pub fn parse(raw: &[u8]) -> Result<Self, Malformed> {
        let magic = raw.get(0..2).map(|m| u16::from_le_bytes([m[0], m[1]]));
        if magic != Some(BTF_MAGIC) {
            return Err(Malformed::Magic);
        }
        let hdr = |off| u32_at(raw, off).ok_or(Malformed::Header);
        let hdr_len = hdr(4)? as usize;
        let (type_off, type_len) = (hdr(8)? as usize, hdr(12)? as usize);
        let (str_off, str_len) = (hdr(16)? as usize, hdr(20)? as usize);
        let section = |off: usize, len: usize, what: &'static str| {
            let start = hdr_len.checked_add(off).ok_or(Malformed::Overflow(what))?;
            let end = start.checked_add(len).ok_or(Malformed::Overflow(what))?;
            raw.get(start..end)
                .map(<[u8]>::to_vec)
                .ok_or(Malformed::PastEnd(what))
        };
        let types = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?;
        let mut btf = Self {
            types,
            strings,
            index: Vec::new(),
        };
        let mut pos = 0usize;
        while pos < btf.types.len() {
            btf.index
                .push(u32::try_from(pos).map_err(|_| Malformed::TooLarge)?);
            let rec = btf.record_at(pos).ok_or(Malformed::Record)?;
            pos = rec.data + btf.trailing_len(&rec)?;
        }
        Ok(btf)
    }

    fn record_at(&self, pos: usize) -> Option<TypeRec> {
        let info = u32_at(&self.types, pos + 4)?;
        Some(TypeRec {
            name_off: u32_at(&self.types, pos)?,
            kind: (info >> 24) & 0x1f,
            vlen: info & 0xffff,
            kind_flag: info >> 31 == 1,
            size_or_type: u32_at(&self.types, pos + 8)?,
            data: pos + 12,
        })
    }

    fn trailing_len(&self, rec: &TypeRec) -> Result<usize, Malformed> {
        let vlen = rec.vlen as usize;
        Ok(match rec.kind {
            KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
            KIND_ARRAY => 12,
            KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
            KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
            0 | KIND_PTR | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12
            | 16 | KIND_TYPE_TAG => 0,
            other => return Err(Malformed::Kind(other)),
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let tail = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        &tail[..end]
    }

    fn by_id(&self, id: u32) -> Option<TypeRec> {
        let pos = *self.index.get((id as usize).checked_sub(1)?)?;
        self.record_at(pos as usize)
    }

    fn find_struct(&self, name: &'static str) -> Result<TypeRec, BtfError> {
        self.index
            .iter()
            .filter_map(|&pos| self.record_at(pos as usize))
            .find(|r| {
                r.kind == KIND_STRUCT && r.vlen > 0 && self.name(r.name_off) == name.as_bytes()
            })
            .ok_or(BtfError::NoStruct(name))
    }

    /// Bit offset of `member` in the struct or union `rec`, looking through anonymous members.
    fn search(&self, rec: &TypeRec, member: &str, base_bits: u32, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for i in 0..rec.vlen as usize {
            let m = rec.data + 12 * i;
            let (name_off, ty, raw_off) = (
                u32_at(&self.types, m)?,
                u32_at(&self.types, m + 4)?,
                u32_at(&self.types, m + 8)?,
            );
            // A blob whose offsets sum past `u32::MAX` names no member: it is malformed.
            let bits = base_bits.checked_add(if rec.kind_flag {
                raw_off & 0x00ff_ffff
            } else {
                raw_off
            })?;
            let name = self.name(name_off);
            if name == member.as_bytes() {
                return Some(bits);
            }
            if name.is_empty() {
                let mut t = self.by_id(ty)?;
                let mut hops = 0;
                while matches!(
                    t.kind,
                    KIND_TYPEDEF | KIND_CONST | KIND_VOLATILE | KIND_TYPE_TAG
                ) && hops < 8
                {
                    t = self.by_id(t.size_or_type)?;
                    hops += 1;
                }
                if matches!(t.kind, KIND_STRUCT | KIND_UNION)
                    && let Some(found) = self.search(&t, member, bits, depth + 1)
                {
                    return Some(found);
                }
            }
        }
        None
    }

    /// Byte offset of `member` in struct `strukt`.
    pub fn member_offset(
        &self,
        strukt: &'static str,
        member: &'static str,
    ) -> Result<u32, BtfError> {
        let s = self.find_struct(strukt)?;
        self.search(&s, member, 0, 0)
            .map(|bits| bits / 8)
            .ok_or(BtfError::NoMember { strukt, member })
    }

    /// Where the six syscall argument registers are saved at entry (x86-64: di, si, dx, r10,
    /// r8, r9), for the exit programs to read the arguments there.
    pub fn regs_layout(&self) -> Result<RegsLayout, BtfError> {
        const ARGS: [&str; 6] = ["di", "si", "dx", "r10", "r8", "r9"];
        let mut offsets = [0u32; 6];
        for (off, reg) in offsets.iter_mut().zip(ARGS) {
            *off = self.member_offset("pt_regs", reg)?;
        }
        let start = offsets.iter().copied().min().unwrap_or(0);
        let span = offsets.iter().copied().max().unwrap_or(0) + 8 - start;
        if span > REGS_SPAN_MAX || offsets.iter().any(|o| (o - start) % 8 != 0) {
            return Err(BtfError::RegsSpan {
                span,
                max: REGS_SPAN_MAX,
            });
        }
        Ok(RegsLayout {
            span_start: start,
            span_len: span,
            arg_word: offsets.map(|o| (o - start) / 8),
        })
    }

    /// The offsets the process programs read.
    pub fn task_layout(&self) -> Result<TaskLayout, BtfError> {
        let t = |m| self.member_offset("task_struct", m);
        let c = |m| self.member_offset("cred", m);
        Ok(TaskLayout {
            pid: t("pid")?,
            tgid: t("tgid")?,
            real_parent: t("real_parent")?,
            group_leader: t("group_leader")?,
            start_boottime: t("start_boottime")?,
            exit_code: t("exit_code")?,
            cred: t("cred")?,
            comm: t("comm")?,
            cred_uid: c("uid")?,
            cred_gid: c("gid")?,
            cred_euid: c("euid")?,
            cred_egid: c("egid")?,
        })
    }
}

impl KernelBtf {
    /// The offsets the syscall and exec programs follow from a task to files and sockets.
    pub fn file_layout(&self) -> Result<FileLayout, BtfError> {
        let o = |s, m| self.member_offset(s, m);
        let sock = o("sock", "__sk_common")?;
        let sk = |m| Ok::<u32, BtfError>(sock + o("sock_common", m)?);
        Ok(FileLayout {
            task_files: o("task_struct", "files")?,
            task_mm: o("task_struct", "mm")?,
            mm_exe_file: o("mm_struct", "exe_file")?,
            files_fdt: o("files_struct", "fdt")?,
            fdt_fd: o("fdtable", "fd")?,
            fdt_max_fds: o("fdtable", "max_fds")?,
            file_inode: o("file", "f_inode")?,
            file_private_data: o("file", "private_data")?,
            file_dentry: o("file", "f_path")? + o("path", "dentry")?,
            dentry_name: o("dentry", "d_name")? + o("qstr", "name")?,
            inode_mode: o("inode", "i_mode")?,
            inode_ino: o("inode", "i_ino")?,
            inode_sb: o("inode", "i_sb")?,
            inode_rdev: o("inode", "i_rdev")?,
            inode_nlink: o("inode", "__i_nlink")?,
            sb_dev: o("super_block", "s_dev")?,
            socket_sk: o("socket", "sk")?,
            sk_family: sk("skc_family")?,
            sk_daddr: sk("skc_daddr")?,
            sk_rcv_saddr: sk("skc_rcv_saddr")?,
            sk_dport: sk("skc_dport")?,
            sk_num: sk("skc_num")?,
            sk_v6_daddr: sk("skc_v6_daddr")?,
            sk_v6_rcv_saddr: sk("skc_v6_rcv_saddr")?,
            sk_type: o("sock", "sk_type")?,
            sk_protocol: o("sock", "sk_protocol")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built BTF blob: `struct s { int a; union { int b; struct { int c; }; }; }`.
    fn tiny_btf() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0c\0".to_vec();
        let (int, s, a, b, c) = (1u32, 5u32, 7u32, 9u32, 11u32);
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int (size 4, 32 bits)
        push(&[int, KIND_INT << 24, 4, 32]);
        // 2: anonymous struct { int c; }
        push(&[0, KIND_STRUCT << 24 | 1, 4, c, 1, 0]);
        // 3: anonymous union { int b; struct {int c;}; }
        push(&[0, KIND_UNION << 24 | 2, 4, b, 1, 0, 0, 2, 0]);
        // 4: struct s { int a; union ...; } with the union at byte 8
        push(&[s, KIND_STRUCT << 24 | 2, 12, a, 1, 0, 0, 3, 64]);
        let mut raw = Vec::new();
        raw.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        raw.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            raw.extend_from_slice(&w.to_le_bytes());
        }
        raw.extend_from_slice(&types);
        raw.extend_from_slice(&strings);
        raw
    }

    #[test]
    fn finds_members_through_anonymous_unions() {
        let btf = KernelBtf::parse(&tiny_btf()).expect("parses");
        assert_eq!(btf.member_offset("s", "a").ok(), Some(0));
        assert_eq!(btf.member_offset("s", "b").ok(), Some(8));
        assert_eq!(btf.member_offset("s", "c").ok(), Some(8));
        assert!(matches!(
            btf.member_offset("s", "zz"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("nope", "a"),
            Err(BtfError::NoStruct("nope"))
        ));
    }

    #[test]
    fn truncated_blobs_are_errors() {
        let raw = tiny_btf();
        for cut in [0, 1, 5, 23, 30, raw.len() - 1] {
            assert!(KernelBtf::parse(&raw[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// Found by the `btf` fuzz target: an anonymous member near the top of the bit range and a
    /// member inside it whose offset carries past `u32::MAX` overflowed the sum and panicked.
    #[test]
    fn offsets_that_carry_past_the_bit_range_are_errors_not_panics() {
        let mut raw = tiny_btf();
        // The union sits at bit offset `u32::MAX - 7` in `s`, and `c`'s struct holds `c` at 64.
        let types_at = 24;
        let union_off = types_at + 16 + 24 + 36 + 12 + 12 + 8;
        raw[union_off..union_off + 4].copy_from_slice(&(u32::MAX - 7).to_le_bytes());
        let c_off = types_at + 16 + 12 + 8;
        raw[c_off..c_off + 4].copy_from_slice(&64u32.to_le_bytes());
        let btf = KernelBtf::parse(&raw).expect("parses");
        assert!(matches!(
            btf.member_offset("s", "c"),
            Err(BtfError::NoMember { .. })
        ));
        assert_eq!(btf.member_offset("s", "a").ok(), Some(0));
    }

    #[test]
    fn the_fuzzers_pt_regs_blob_is_an_error() {
        const CRASH: &[u8] = &[
            159, 235, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0, 103, 0, 0, 0, 50, 0, 0, 0, 38, 0, 0, 0, 18,
            0, 0, 0, 2, 0, 228, 164, 228, 0, 230, 0, 7, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 4, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0, 0, 1, 228, 228, 5, 112, 116, 95, 114, 101, 103,
            115, 0, 3, 0, 0, 0, 228, 228, 228, 228, 251, 20, 0, 0, 0, 0, 0, 0, 0, 201, 201, 201,
            201, 201, 201, 201, 201, 201, 201, 201, 201, 201, 201, 201, 201, 201, 137, 201, 201, 0,
            0, 1, 1, 0, 0, 0, 0, 0, 114, 1,
        ];
        if let Ok(btf) = KernelBtf::parse(CRASH) {
            assert!(btf.regs_layout().is_err());
            assert!(btf.task_layout().is_err());
            assert!(btf.file_layout().is_err());
        }
    }

    #[test]
    fn missing_btf_is_a_clear_error() {
        let err = KernelBtf::open(Path::new("/nonexistent/vmlinux"))
            .err()
            .expect("must fail");
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/vmlinux") && text.contains("CONFIG_DEBUG_INFO_BTF"),
            "{text}"
        );
    }

    #[test]
    fn garbage_btf_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vmlinux");
        std::fs::write(&path, b"this is not BTF").expect("write");
        let err = KernelBtf::open(&path).err().expect("must fail");
        assert!(err.to_string().contains("cannot parse"), "{err}");
    }

    #[test]
    fn resolves_task_struct_on_this_kernel() {
        let Ok(btf) = KernelBtf::open(Path::new(VMLINUX_BTF)) else {
            eprintln!("skipped: this machine has no {VMLINUX_BTF}");
            return;
        };
        let l = btf.task_layout().expect("task_struct layout");
        assert_eq!(
            l.tgid,
            l.pid + 4,
            "pid and tgid are adjacent pid_t fields: {l:?}"
        );
        assert_eq!(l.cred_gid, l.cred_uid + 4, "{l:?}");
        assert!(l.cred_euid > l.cred_gid, "{l:?}");
        let f = btf.file_layout().expect("file and socket layout");
        assert_eq!(f.sk_rcv_saddr, f.sk_daddr + 4, "{f:?}");
    }
}
