//! The eBPF objects this process holds, by kind and id: what the tampering rules compare a
//! `bpf()` call's target with. Read from procfs, so it needs no aya (the controller builds it).

/// The kind of an eBPF object, as the `bpf()` command that takes a handle on it by id names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Program,
    Map,
    Link,
}

/// Every eBPF program, map and link this process holds a descriptor on, from
/// `/proc/self/fdinfo` (whatever made them: the loader, containment, aya).
pub fn own_objects() -> Vec<(ObjectKind, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fdinfo") else {
        return Vec::new();
    };
    let mut out: Vec<(ObjectKind, u32)> = dir
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines().find_map(|l| {
                let (key, value) = l.split_once(':')?;
                let kind = match key {
                    "prog_id" => ObjectKind::Program,
                    "map_id" => ObjectKind::Map,
                    "link_id" => ObjectKind::Link,
                    _ => return None,
                };
                Some((kind, value.trim().parse().ok()?))
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

impl ObjectKind {
    /// The kind `BPF_{PROG,MAP,LINK}_GET_FD_BY_ID` (command `cmd`) asks for.
    pub fn of_command(cmd: u64) -> Option<Self> {
        match cmd {
            13 => Some(Self::Program),
            14 => Some(Self::Map),
            30 => Some(Self::Link),
            _ => None,
        }
    }
}
