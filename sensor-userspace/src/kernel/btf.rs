//! `task_struct` and `cred` member offsets from the kernel's BTF. rustc emits no CO-RE
//! relocations, so the loader resolves the offsets here and hands them to the programs.

use std::path::{Path, PathBuf};

use btf_rs::{Btf, BtfType, Type};
use sensor_common::config::TaskLayout;

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "no kernel BTF at {path}: the sensor needs a kernel built with CONFIG_DEBUG_INFO_BTF (Linux 5.8+)"
    )]
    Missing { path: PathBuf },
    #[error("cannot parse the kernel BTF at {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("the kernel BTF has no struct {0}")]
    NoStruct(&'static str),
    #[error("struct {strukt} in the kernel BTF has no member {member}")]
    NoMember {
        strukt: &'static str,
        member: &'static str,
    },
    #[error("BTF lookup failed while resolving {what}: {reason}")]
    Lookup { what: String, reason: String },
}

/// The kernel's BTF, read once.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn open(path: &Path) -> Result<Self, BtfError> {
        if !path.exists() {
            return Err(BtfError::Missing {
                path: path.to_owned(),
            });
        }
        let btf = Btf::from_file(path).map_err(|e| BtfError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self { btf })
    }

    fn lookup<T>(&self, what: &str, r: anyhow::Result<T>) -> Result<T, BtfError> {
        r.map_err(|e| BtfError::Lookup {
            what: what.to_owned(),
            reason: e.to_string(),
        })
    }

    fn find_struct(&self, name: &'static str) -> Result<btf_rs::Struct, BtfError> {
        let types = self.btf.resolve_types_by_name(name).map_err(|_| BtfError::NoStruct(name))?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or(BtfError::NoStruct(name))
    }

    /// Byte offset of `member` in `strukt`, looking through anonymous structs and unions.
    pub fn member_offset(&self, strukt: &'static str, member: &'static str) -> Result<u32, BtfError> {
        let s = self.find_struct(strukt)?;
        self.search(&s, member, 0)?
            .map(|bits| bits / 8)
            .ok_or(BtfError::NoMember { strukt, member })
    }

    fn search(&self, s: &btf_rs::Struct, member: &str, base_bits: u32) -> Result<Option<u32>, BtfError> {
        for m in &s.members {
            let name = self.lookup(member, self.btf.resolve_name(m))?;
            let bits = base_bits + m.bit_offset();
            if name == member {
                return Ok(Some(bits));
            }
            if name.is_empty() {
                // An anonymous struct or union: its members belong to the parent.
                let mut t = self.lookup(member, self.btf.resolve_chained_type(m))?;
                loop {
                    match t {
                        Type::Struct(inner) | Type::Union(inner) => {
                            if let Some(found) = self.search(&inner, member, bits)? {
                                return Ok(Some(found));
                            }
                            break;
                        }
                        Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) => {
                            let next = t.as_btf_type().map(|bt| self.btf.resolve_chained_type(bt));
                            match next {
                                Some(r) => t = self.lookup(member, r)?,
                                None => break,
                            }
                        }
                        _ => break,
                    }
                }
            }
        }
        Ok(None)
    }

    /// The offsets the process programs read.
    pub fn task_layout(&self) -> Result<TaskLayout, BtfError> {
        let t = |m| self.member_offset("task_struct", m);
        let c = |m| self.member_offset("cred", m);
        Ok(TaskLayout {
            pid: t("pid")?,
            tgid: t("tgid")?,
            real_parent: t("real_parent")?,
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

// `BtfType` is the trait behind `resolve_name`/`resolve_chained_type`; keep it in scope.
#[expect(dead_code, reason = "names the trait whose methods the resolver calls")]
fn _uses(_: &dyn BtfType) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_btf_is_a_clear_error() {
        let err = KernelBtf::open(Path::new("/nonexistent/vmlinux")).err().expect("must fail");
        let text = err.to_string();
        assert!(text.contains("/nonexistent/vmlinux") && text.contains("CONFIG_DEBUG_INFO_BTF"), "{text}");
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
        assert!(l.tgid > l.pid.saturating_sub(8) && l.tgid != l.pid, "{l:?}");
        assert!(l.cred_euid > l.cred_uid, "{l:?}");
    }
}
