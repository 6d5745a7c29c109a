//! In-kernel network containment (`sensor_common::netguard`): host isolation and destination
//! blocks. `connect4`/`connect6` refuse a new connection (the caller gets EPERM); the
//! `cgroup_skb` programs drop the packets of connections that were already open, both ways.
//! All of them attach to one cgroup (the cgroup v2 root by default) and so see every socket of
//! the processes under it.

use aya_ebpf::{
    helpers::generated::{bpf_get_current_cgroup_id, bpf_skb_cgroup_id},
    macros::{cgroup_skb, cgroup_sock_addr, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::{SkBuffContext, SockAddrContext},
};
use sensor_common::netguard::{
    DEST_BLOCK_ENTRIES, DestKey, ISOLATION_ALLOW, NetGuard, is_loopback, net_slot, v4_mapped,
};

/// The isolation switch, its allow list and the blocklist's size. Written by userspace.
#[map]
static NET_GUARD: Array<NetGuard> = Array::with_max_entries(1, 0);

/// Blocked destinations. Written by userspace.
#[map]
static DEST_BLOCKS: HashMap<DestKey, u32> = HashMap::with_max_entries(DEST_BLOCK_ENTRIES, 0);

/// Per-CPU counters (`net_slot`).
#[map]
static NET_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(net_slot::COUNT, 0);

const PASS: i32 = 1;
const REFUSE: i32 = 0;

/// The peer of a connection or a packet.
struct Peer {
    addr: [u32; 4],
    port: u16,
}

#[inline(always)]
fn bump(slot: u32) {
    if let Some(p) = NET_STATS.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot, valid for the program's run.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn blocked(peer: &Peer, port: u16, scope: u64) -> bool {
    let key = DestKey {
        scope,
        addr: peer.addr,
        port,
        _pad: [0; 3],
    };
    // SAFETY: a lookup; the value is never read.
    unsafe { DEST_BLOCKS.get(key) }.is_some()
}

/// Whether traffic with `peer` is to be cut. `scope` gives the cgroup id of the socket's
/// owner, asked only when a block exists.
#[inline(always)]
fn refused(peer: &Peer, scope: impl Fn() -> u64) -> bool {
    let Some(guard) = NET_GUARD.get_ptr(0) else {
        return false;
    };
    // SAFETY: the map's only value, valid for the program's run.
    let guard = unsafe { &*guard };
    if (guard.isolated == 0 && guard.blocks == 0) || is_loopback(&peer.addr) {
        return false;
    }
    if guard.blocks != 0 {
        if blocked(peer, peer.port, 0) || blocked(peer, 0, 0) {
            return true;
        }
        let cg = scope();
        if cg != 0 && (blocked(peer, peer.port, cg) || blocked(peer, 0, cg)) {
            return true;
        }
    }
    if guard.isolated == 0 {
        return false;
    }
    let mut i = 0;
    while i < ISOLATION_ALLOW {
        if i as u32 >= guard.allowed {
            break;
        }
        let a = &guard.allow[i];
        if a.addr == peer.addr && (a.port == 0 || a.port == peer.port) {
            return false;
        }
        i += 1;
    }
    true
}

#[inline(always)]
fn connect_verdict(peer: Peer) -> i32 {
    // SAFETY: no preconditions.
    if refused(&peer, || unsafe { bpf_get_current_cgroup_id() }) {
        bump(net_slot::CONNECT_REFUSED);
        REFUSE
    } else {
        PASS
    }
}

#[cgroup_sock_addr(connect4)]
pub fn vigil_connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the context the kernel passes; these fields are readable in connect4.
    let (ip, port) = unsafe { ((*ctx.sock_addr).user_ip4, (*ctx.sock_addr).user_port) };
    connect_verdict(Peer {
        addr: v4_mapped(ip),
        port: u16::from_be(port as u16),
    })
}

#[cgroup_sock_addr(connect6)]
pub fn vigil_connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: as above; user_ip6 is read one 32-bit word at a time, as the verifier asks.
    let (addr, port) = unsafe {
        let sa = ctx.sock_addr;
        (
            [
                (*sa).user_ip6[0],
                (*sa).user_ip6[1],
                (*sa).user_ip6[2],
                (*sa).user_ip6[3],
            ],
            (*sa).user_port,
        )
    };
    connect_verdict(Peer {
        addr,
        port: u16::from_be(port as u16),
    })
}

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
/// ICMPv6 router and neighbour discovery (133 to 137): without it no IPv6 peer, the
/// controller included, is reachable.
const NDP: core::ops::RangeInclusive<u8> = 133..=137;
const LOOPBACK_IFINDEX: u32 = 1;

/// The peer of a packet (`cgroup_skb` data starts at the network header): the destination on
/// egress, the source on ingress. None for what is always let through (neighbour discovery,
/// anything that is not IP).
#[inline(always)]
fn packet_peer(ctx: &SkBuffContext, egress: bool) -> Option<Peer> {
    let first: u8 = ctx.load(0).ok()?;
    let (addr, proto, l4) = match first >> 4 {
        4 => {
            let proto: u8 = ctx.load(9).ok()?;
            let frag: u16 = ctx.load(6).ok()?;
            let ip: u32 = ctx.load(if egress { 16 } else { 12 }).ok()?;
            let l4 = if u16::from_be(frag) & 0x1fff == 0 {
                Some(usize::from(first & 0x0f) * 4)
            } else {
                None // a later fragment carries no ports
            };
            (v4_mapped(ip), proto, l4)
        }
        6 => {
            let proto: u8 = ctx.load(6).ok()?;
            let at = if egress { 24 } else { 8 };
            let addr = [
                ctx.load(at).ok()?,
                ctx.load(at + 4).ok()?,
                ctx.load(at + 8).ok()?,
                ctx.load(at + 12).ok()?,
            ];
            if proto == IPPROTO_ICMPV6 {
                let kind: u8 = ctx.load(40).ok()?;
                if NDP.contains(&kind) {
                    return None;
                }
            }
            (addr, proto, Some(40))
        }
        _ => return None,
    };
    let port = match l4 {
        Some(off) if proto == IPPROTO_TCP || proto == IPPROTO_UDP => {
            let p: u16 = ctx.load(off + if egress { 2 } else { 0 }).ok()?;
            u16::from_be(p)
        }
        _ => 0,
    };
    Some(Peer { addr, port })
}

#[inline(always)]
fn packet_verdict(ctx: &SkBuffContext, egress: bool) -> i32 {
    // SAFETY: the context the kernel passes.
    if unsafe { (*ctx.skb.skb).ifindex } == LOOPBACK_IFINDEX {
        return PASS;
    }
    let Some(peer) = packet_peer(ctx, egress) else {
        return PASS;
    };
    // SAFETY: the context the kernel passes.
    if refused(&peer, || unsafe { bpf_skb_cgroup_id(ctx.skb.skb) }) {
        bump(net_slot::PACKET_DROPPED);
        REFUSE
    } else {
        PASS
    }
}

#[cgroup_skb(egress)]
pub fn vigil_egress(ctx: SkBuffContext) -> i32 {
    packet_verdict(&ctx, true)
}

#[cgroup_skb(ingress)]
pub fn vigil_ingress(ctx: SkBuffContext) -> i32 {
    packet_verdict(&ctx, false)
}
