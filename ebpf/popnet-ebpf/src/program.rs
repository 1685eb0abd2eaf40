//! The XDP program: answers a standard query for a mapped (name, type, view) in the driver and passes everything else, unchanged, to the userspace server.
//!
//! What it answers: Ethernet with at most one 802.1Q tag; IPv4 without options and not
//! fragmented, or IPv6 without extension headers; UDP to the DNS port and an address the
//! server listens on; a DNS query (QR=0, opcode 0, TC=0, QDCOUNT 1, ANCOUNT 0, NSCOUNT
//! 0) with an uncompressed name of at most `MAX_NAME` bytes, class IN, and either no
//! additional record or one EDNS version 0 OPT with at most four options, well-formed
//! and not Client Subnet. The view is the longest view prefix containing the
//! source address. The reply is the map's answer spliced behind the query's id and
//! question, as userspace's `dns_fastpath::respond` builds it, plus the same OPT.
//!
//! Every read is checked against `data_end` first (the reason is beside each check);
//! anything unusual is `XDP_PASS`ed and counted per reason. The incoming UDP checksum
//! is not verified (as in Knot DNS's XDP module): the program only answers what parses
//! completely, and the stack verifies what it passes on.

use aya_ebpf::bindings::{BPF_F_NO_PREALLOC, xdp_action};
use aya_ebpf::btf_maps::lpm_trie::Key;
use aya_ebpf::btf_maps::{ArrayOfMaps, HashMap, LpmTrie, LruHashMap, PerCpuArray};
use aya_ebpf::helpers::{
    bpf_get_prandom_u32, bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_load_bytes,
    bpf_xdp_store_bytes,
};
use aya_ebpf::macros::{btf_map, xdp};
use aya_ebpf::programs::XdpContext;
use popnet_common::{
    AnswerKey, AnswerValue, COUNTERS, Counter, MAX_ANSWERS, MAX_BODY, MAX_LISTEN, MAX_NAME,
    MAX_PREFIXES, MAX_SEEN, MAX_SLOTS, NO_SLOT, OPT_LEN, RESOLVER_ENTRY, VIEW_ANY, csum_add,
    csum_fold,
};

// Set by userspace when it loads the program (aya `EbpfLoader::set_global`).
/// UDP port the DNS server listens on.
#[unsafe(no_mangle)]
static DNS_PORT: u16 = 53;
/// Our EDNS UDP payload size (the config's `dns.udp_payload`).
#[unsafe(no_mangle)]
static UDP_PAYLOAD: u16 = 1232;
/// 1 if the server listens on the IPv4 wildcard address (then any destination is ours).
#[unsafe(no_mangle)]
static ANY_DST4: u8 = 0;
/// 1 if the server listens on the IPv6 wildcard address.
#[unsafe(no_mangle)]
static ANY_DST6: u8 = 0;
/// The IPv4 addresses the server listens on (as in the packet, read as a native u32),
/// the first `LISTEN4_LEN` slots used.
#[unsafe(no_mangle)]
static LISTEN4: [u32; MAX_LISTEN] = [0; MAX_LISTEN];
#[unsafe(no_mangle)]
static LISTEN4_LEN: u8 = 0;
/// The IPv6 addresses, as two native u64 each.
#[unsafe(no_mangle)]
static LISTEN6: [[u64; 2]; MAX_LISTEN] = [[0; 2]; MAX_LISTEN];
#[unsafe(no_mangle)]
static LISTEN6_LEN: u8 = 0;
/// 1 if the DNS server places resolvers by latency: sources without an exact entry in
/// the view trie are then sampled into `SEEN4`/`SEEN6` for it to measure.
#[unsafe(no_mangle)]
static TRACK_RESOLVERS: u8 = 0;

/// The answers, double-buffered: slot 0 points at the active inner map. Userspace writes
/// only the inactive one, then swaps; the kernel waits for an RCU grace period before
/// the swap returns, so no program run ever reads a map being written (see
/// `dns_fastpath::xdp::writer`).
#[btf_map]
static ANSWERS: ArrayOfMaps<
    HashMap<AnswerKey, AnswerValue, { MAX_ANSWERS as usize }, { BPF_F_NO_PREALLOC as usize }>,
    1,
> = ArrayOfMaps::new();
/// Resolver prefixes → view id.
#[btf_map]
static VIEWS4: LpmTrie<[u8; 4], u16, { MAX_PREFIXES as usize }> = LpmTrie::new();
#[btf_map]
static VIEWS6: LpmTrie<[u8; 16], u16, { MAX_PREFIXES as usize }> = LpmTrie::new();
/// Resolvers whose queries the program answered, sampled, for userspace to measure.
#[btf_map]
static SEEN4: LruHashMap<[u8; 4], u8, { MAX_SEEN as usize }> = LruHashMap::new();
#[btf_map]
static SEEN6: LruHashMap<[u8; 16], u8, { MAX_SEEN as usize }> = LruHashMap::new();
/// Per-CPU counters, indexed by [`Counter`].
#[btf_map]
static COUNTS: PerCpuArray<u64, COUNTERS> = PerCpuArray::new();
/// Per-CPU answers sent, indexed by [`AnswerValue::slot`]; userspace reads the growth of
/// each and adds it to the DNS records of the servers in that answer.
#[btf_map]
static HITS: PerCpuArray<u64, { MAX_SLOTS as usize }> = PerCpuArray::new();
/// Per-CPU working memory (too large for the 512-byte BPF stack beside the rest): the
/// answer key, a slot for [`opaque`], room for the question.
#[repr(C)]
struct Scratch {
    key: AnswerKey,
    slot: u64,
    /// The question while it moves (when a reply grows at the head).
    question: [u8; MAX_NAME + 4],
}
#[btf_map]
static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// Returns `v` through map memory, so the verifier sees an unknown value instead of one
/// state per path that computed it (each loop exit would otherwise verify the rest of
/// the program again). Callers bound the result again.
#[inline(always)]
fn opaque(slot: &mut u64, v: usize) -> usize {
    // SAFETY: `slot` is a valid, exclusive reference; volatile keeps the store and load.
    unsafe {
        core::ptr::write_volatile(slot, v as u64);
        core::ptr::read_volatile(slot) as usize
    }
}

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;
const DNS_HLEN: usize = 12;
const OPT_TYPE: u16 = 41;
const ECS_CODE: u16 = 8;
const COOKIE_CODE: u16 = 10;
/// Largest offset inside a frame the program follows (XDP frames fit in a page).
const MAX_FRAME: usize = 4096;
/// Most a reply grows at the head: XDP guarantees 256 bytes of headroom, less the
/// kernel's `xdp_frame` kept there.
const MAX_HEAD_GROWTH: usize = 128;
/// Most EDNS options walked before passing the query on (resolvers send one or two:
/// a cookie, padding). Each one more multiplies the paths the verifier walks.
const MAX_OPTIONS: usize = 4;
const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_CD: u16 = 0x0010;
const OPCODE_MASK: u16 = 0x7800;

#[xdp]
pub fn popnet_dns(ctx: XdpContext) -> u32 {
    match try_popnet_dns(&ctx) {
        Ok(action) => {
            count(if action == xdp_action::XDP_TX {
                Counter::Answered
            } else {
                Counter::DropRewrite
            });
            action
        }
        Err(why) => {
            count(why);
            xdp_action::XDP_PASS
        }
    }
}

/// Passes every frame. Attached to the peer of a veth that carries XDP_TX replies: in
/// native mode a veth delivers XDP_TX frames only to a peer that runs XDP too.
#[xdp]
pub fn popnet_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn count(c: Counter) {
    if let Some(slot) = COUNTS.get_ptr_mut(c as u32) {
        // SAFETY: a per-CPU slot: only this CPU touches it, and softirq context does not
        // preempt itself.
        unsafe { *slot += 1 };
    }
}

/// Reads `N` bytes at `off` after checking they lie inside the frame.
#[inline(always)]
fn read<const N: usize>(ctx: &XdpContext, off: usize, why: Counter) -> Result<[u8; N], Counter> {
    let start = ctx.data();
    if start + off + N > ctx.data_end() {
        return Err(why);
    }
    // SAFETY: `start + off .. start + off + N` is inside the packet (checked above);
    // the read is unaligned-safe.
    Ok(unsafe { core::ptr::read_unaligned((start + off) as *const [u8; N]) })
}

#[inline(always)]
fn be16(ctx: &XdpContext, off: usize, why: Counter) -> Result<u16, Counter> {
    read::<2>(ctx, off, why).map(u16::from_be_bytes)
}

#[inline(always)]
fn byte(ctx: &XdpContext, off: usize, why: Counter) -> Result<u8, Counter> {
    read::<1>(ctx, off, why).map(|b| b[0])
}

/// Writes `bytes` at `off` after checking they lie inside the frame.
#[inline(always)]
fn write<const N: usize>(ctx: &XdpContext, off: usize, bytes: [u8; N]) -> Result<(), ()> {
    let start = ctx.data();
    if start + off + N > ctx.data_end() {
        return Err(());
    }
    // SAFETY: inside the packet (checked above).
    unsafe { core::ptr::write_unaligned((start + off) as *mut [u8; N], bytes) };
    Ok(())
}

/// The view from a view-trie lookup. A source without an exact resolver entry is, one
/// packet in sixteen, noted by `note` for userspace to measure (when it places
/// resolvers by latency).
#[inline(always)]
fn view_of(found: Option<u16>, note: impl FnOnce()) -> u16 {
    let value = found.unwrap_or(0);
    // SAFETY: a read-only global userspace sets before loading.
    let track = unsafe { core::ptr::read_volatile(&TRACK_RESOLVERS) } != 0;
    // SAFETY: a helper without arguments.
    if value & RESOLVER_ENTRY == 0 && track && unsafe { bpf_get_prandom_u32() } & 15 == 0 {
        note();
    }
    value & !RESOLVER_ENTRY
}

/// True if the server listens on IPv4 address `a` (in packet byte order).
#[inline(always)]
fn listens4(a: u32) -> bool {
    // SAFETY: read-only globals userspace sets before loading.
    let (addrs, n) = unsafe {
        (
            core::ptr::read_volatile(&LISTEN4),
            core::ptr::read_volatile(&LISTEN4_LEN),
        )
    };
    let mut i = 0;
    while i < MAX_LISTEN {
        if i < usize::from(n) && addrs[i] == a {
            return true;
        }
        i += 1;
    }
    false
}

/// True if the server listens on IPv6 address `a`.
#[inline(always)]
fn listens6(a: &[u8; 16]) -> bool {
    let hi = u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let lo = u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    // SAFETY: as for `listens4`.
    let (addrs, n) = unsafe {
        (
            core::ptr::read_volatile(&LISTEN6),
            core::ptr::read_volatile(&LISTEN6_LEN),
        )
    };
    let mut i = 0;
    while i < MAX_LISTEN {
        if i < usize::from(n) && addrs[i][0] == hi && addrs[i][1] == lo {
            return true;
        }
        i += 1;
    }
    false
}

/// Lowercases the ASCII capitals among eight bytes at once (SWAR): a byte gets 0x20 added
/// when its high bit is clear and it lies in 'A'..='Z'.
#[inline(always)]
fn ascii_lowercase8(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let heptets = x & (ONES * 0x7f);
    // High bit set where the low seven bits are >= 'A', and where they are > 'Z' (no
    // carry crosses a byte: 0x7f + 0x3f < 0x100).
    let at_least_a = heptets + ONES * (0x80 - u64::from(b'A'));
    let past_z = heptets + ONES * (0x80 - u64::from(b'Z') - 1);
    let upper = at_least_a & !past_z & !x & (ONES * 0x80);
    x | (upper >> 2)
}

/// Adds byte `b` found at an offset of parity `odd` to a checksum accumulator.
#[inline(always)]
fn sum_byte(sum: u32, b: u8, odd: bool) -> u32 {
    if odd {
        csum_add(sum, u16::from(b))
    } else {
        csum_add(sum, u16::from(b) << 8)
    }
}

/// Adds `bytes` (starting at an offset of parity `odd`) to a checksum accumulator.
#[inline(always)]
fn sum_at<const N: usize>(mut sum: u32, bytes: &[u8; N], odd: bool) -> u32 {
    let mut k = 0;
    while k < N {
        sum = sum_byte(sum, bytes[k], odd ^ (k & 1 == 1));
        k += 1;
    }
    sum
}

/// What parsing learned about the query, for building the reply.
struct Query {
    v6: bool,
    l3: usize,
    l4: usize,
    dns: usize,
    /// Question bytes (name, type, class).
    q_len: usize,
    /// Ones'-complement sum of the source and destination addresses (pseudo-header).
    addr_sum: u32,
    sport: u16,
    dport: u16,
    /// Bytes of the query read before the frame is resized: destination and source MAC,
    /// the VLAN tag (TCI) if any, and the IP source and destination addresses (4 or 16
    /// bytes each, source first).
    macs: [u8; 12],
    tci: Option<[u8; 2]>,
    addrs: [u8; 32],
}

fn try_popnet_dns(ctx: &XdpContext) -> Result<u32, Counter> {
    // --- Ethernet, with at most one 802.1Q tag ------------------------------------
    // The ethertype must be inside the frame.
    let mut ethertype = be16(ctx, 12, Counter::PassNotIp)?;
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q {
        // The tag's inner ethertype must be inside the frame.
        ethertype = be16(ctx, 16, Counter::PassVlan)?;
        l3 = ETH_HLEN + 4;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Err(Counter::PassVlan); // a second tag (or a service tag)
    }
    let frame_len = ctx.data_end() - ctx.data();

    // The key is built in per-CPU scratch memory: zero what a previous packet left.
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(Counter::PassAdjust)?;
    // SAFETY: a per-CPU slot of this map, used by this program run only (XDP runs do not
    // nest on a CPU).
    let scratch = unsafe { &mut *scratch };
    let key = &mut scratch.key;
    key.name = [0; MAX_NAME];

    // --- IP --------------------------------------------------------------------------
    let (v6, l4, ip_payload, addr_sum) = match ethertype {
        ETH_P_IP => {
            // The whole 20-byte header must be inside the frame before any field is used.
            let h = read::<20>(ctx, l3, Counter::PassIpMalformed)?;
            if h[0] >> 4 != 4 {
                return Err(Counter::PassIpMalformed);
            }
            if h[0] & 0x0f != 5 {
                // IHL > 5: options; IHL < 5 is malformed, the stack drops it.
                return Err(if h[0] & 0x0f > 5 {
                    Counter::PassIpOptions
                } else {
                    Counter::PassIpMalformed
                });
            }
            if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
                return Err(Counter::PassFragment); // MF set or a non-zero offset
            }
            if h[9] != IPPROTO_UDP {
                return Err(Counter::PassNotUdp);
            }
            // The header checksum must verify (the stack would drop the packet).
            let mut s = 0u32;
            let mut k = 0;
            while k < 20 {
                s = csum_add(s, u16::from_be_bytes([h[k], h[k + 1]]));
                k += 2;
            }
            if csum_fold(s) != 0xffff {
                return Err(Counter::PassIpMalformed);
            }
            let tot_len = usize::from(u16::from_be_bytes([h[2], h[3]]));
            // The datagram must fit in the frame and hold a UDP header.
            if tot_len < 20 + 8 || l3 + tot_len > frame_len {
                return Err(Counter::PassIpMalformed);
            }
            let dst = [h[16], h[17], h[18], h[19]];
            // SAFETY: a global userspace sets before loading; volatile so the compiler
            // does not fold the default value.
            let any = unsafe { core::ptr::read_volatile(&ANY_DST4) } != 0;
            if !any && !listens4(u32::from_ne_bytes(dst)) {
                return Err(Counter::PassNotDns);
            }
            let src = [h[12], h[13], h[14], h[15]];
            key.view = view_of(VIEWS4.get(&Key::new(32, src)).copied(), || {
                let _ = SEEN4.insert(src, 1, 0);
            });
            let mut sum = 0u32;
            let mut k = 12;
            while k < 20 {
                sum = csum_add(sum, u16::from_be_bytes([h[k], h[k + 1]]));
                k += 2;
            }
            (false, l3 + 20, tot_len - 20, sum)
        }
        ETH_P_IPV6 => {
            // The fixed 40-byte header must be inside the frame before any field is used.
            let h = read::<8>(ctx, l3, Counter::PassIpMalformed)?;
            if ctx.data() + l3 + 40 > ctx.data_end() || h[0] >> 4 != 6 {
                return Err(Counter::PassIpMalformed);
            }
            if h[6] != IPPROTO_UDP {
                return Err(Counter::PassNotUdp); // extension headers, or not UDP
            }
            let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
            // The payload must fit in the frame and hold a UDP header (0 = jumbogram).
            if payload < 8 || l3 + 40 + payload > frame_len {
                return Err(Counter::PassIpMalformed);
            }
            let dst = read::<16>(ctx, l3 + 24, Counter::PassIpMalformed)?;
            // SAFETY: as for ANY_DST4.
            let any = unsafe { core::ptr::read_volatile(&ANY_DST6) } != 0;
            if !any && !listens6(&dst) {
                return Err(Counter::PassNotDns);
            }
            let mut sum = sum_at(0, &dst, false);
            let src = read::<16>(ctx, l3 + 8, Counter::PassIpMalformed)?;
            // ::ffff:0:0/96: userspace maps these to their IPv4 view.
            if src[..10] == [0; 10] && src[10] == 0xff && src[11] == 0xff {
                return Err(Counter::PassV4Mapped);
            }
            sum = sum_at(sum, &src, false);
            key.view = view_of(VIEWS6.get(&Key::new(128, src)).copied(), || {
                let _ = SEEN6.insert(src, 1, 0);
            });
            (true, l3 + 40, payload, sum)
        }
        _ => return Err(Counter::PassNotIp),
    };

    // --- UDP -------------------------------------------------------------------------
    // The 8-byte UDP header must be inside the frame.
    let u = read::<8>(ctx, l4, Counter::PassUdpMalformed)?;
    let sport = u16::from_be_bytes([u[0], u[1]]);
    let dport = u16::from_be_bytes([u[2], u[3]]);
    // SAFETY: as for ANY_DST4.
    if dport != unsafe { core::ptr::read_volatile(&DNS_PORT) } {
        return Err(Counter::PassNotDns);
    }
    let ulen = usize::from(u16::from_be_bytes([u[4], u[5]]));
    // The UDP length must cover a DNS header and fit in the IP payload (the stack trims
    // a shorter one to it, as we do).
    if ulen < 8 + DNS_HLEN || ulen > ip_payload {
        return Err(Counter::PassUdpMalformed);
    }
    let dns = l4 + 8;
    let dns_len = ulen - 8;

    // --- DNS header ------------------------------------------------------------------
    // The 12-byte header must be inside the frame (the message is, per the checks above).
    let h = read::<DNS_HLEN>(ctx, dns, Counter::PassDnsHeader)?;
    let id = u16::from_be_bytes([h[0], h[1]]);
    let qflags = u16::from_be_bytes([h[2], h[3]]);
    if qflags & (FLAG_QR | FLAG_TC | OPCODE_MASK) != 0 {
        return Err(Counter::PassDnsHeader); // a response, truncated, or not a QUERY
    }
    if u16::from_be_bytes([h[4], h[5]]) != 1
        || u16::from_be_bytes([h[6], h[7]]) != 0
        || u16::from_be_bytes([h[8], h[9]]) != 0
    {
        return Err(Counter::PassDnsHeader); // QDCOUNT 1, no answer or authority records
    }
    let ar = u16::from_be_bytes([h[10], h[11]]);
    if ar > 1 {
        return Err(Counter::PassDnsHeader);
    }

    // --- Question name: first its labels, then its bytes into the key -------------------
    let qname = dns + DNS_HLEN;
    // Walk the labels to find the name's length. Label lengths come from the packet, so
    // the length is a range for the verifier, not one state per possible value.
    let mut pos = 0usize;
    let mut name_len = 0usize;
    let mut labels = 0;
    while labels < MAX_NAME / 2 {
        // The length byte must lie within the map's names, the message and the frame.
        if pos >= MAX_NAME || DNS_HLEN + pos >= dns_len {
            return Err(Counter::PassName);
        }
        let len = usize::from(byte(ctx, qname + pos, Counter::PassName)?);
        if len == 0 {
            name_len = pos + 1;
            break;
        }
        if len > 63 {
            return Err(Counter::PassName); // a compression pointer or reserved label type
        }
        pos += 1 + len;
        labels += 1;
    }
    let name_len = opaque(&mut scratch.slot, name_len);
    if name_len == 0 || name_len > MAX_NAME {
        return Err(Counter::PassName); // longer than MAX_NAME: userspace answers it
    }
    // Copy the name into the key with one helper call, then, eight bytes at a time, sum
    // it for the checksum as received (the reply echoes its case) and lowercase it.
    // Length bytes are at most 63, never an ASCII capital, so lowercasing every byte
    // changes only the letters; the key's zero padding changes neither.
    // SAFETY: the key's name holds MAX_NAME bytes and 0 < name_len <= MAX_NAME (checked
    // above); the helper checks the packet range.
    if unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            qname as u32,
            key.name.as_mut_ptr() as *mut _,
            name_len as u32,
        )
    } != 0
    {
        return Err(Counter::PassName);
    }
    // Sum of the little-endian 16-bit lanes: the byte-swapped big-endian sum (RFC 1071).
    let mut lanes = 0u64;
    let words = name_len.div_ceil(8);
    let mut w = 0usize;
    while w < MAX_NAME / 8 {
        if w >= words {
            break;
        }
        // `w < MAX_NAME / 8` by the loop condition; the mask states it for the verifier.
        let at = (w & (MAX_NAME / 8 - 1)) * 8;
        // SAFETY: `at + 8 <= MAX_NAME`: inside the key's name, in this run's scratch memory.
        let word = unsafe { core::ptr::read_unaligned(key.name.as_ptr().add(at) as *const u64) };
        lanes += (word & 0xffff) + ((word >> 16) & 0xffff) + ((word >> 32) & 0xffff) + (word >> 48);
        // SAFETY: as above.
        unsafe {
            core::ptr::write_unaligned(
                key.name.as_mut_ptr().add(at) as *mut u64,
                ascii_lowercase8(word),
            )
        };
        w += 1;
    }
    // The question starts at DNS offset 12, an even offset.
    let mut qsum = u32::from(
        csum_fold(csum_fold((lanes & 0xffff_ffff) as u32) as u32 + (lanes >> 32) as u32)
            .swap_bytes(),
    );
    let q_end = DNS_HLEN + name_len + 4;
    // QTYPE and QCLASS must be inside the message and the frame.
    if q_end > dns_len {
        return Err(Counter::PassName);
    }
    let tc = read::<4>(ctx, qname + name_len, Counter::PassName)?;
    if u16::from_be_bytes([tc[2], tc[3]]) != 1 {
        return Err(Counter::PassClass);
    }
    qsum = sum_at(qsum, &tc, name_len & 1 == 1);
    key.qtype = u16::from_be_bytes([tc[0], tc[1]]);

    // --- EDNS ------------------------------------------------------------------------
    // (client payload, DO bit) of the query's OPT, if it has one.
    let opt = if ar == 0 {
        if q_end != dns_len {
            return Err(Counter::PassEdns); // trailing bytes: userspace answers FORMERR
        }
        None
    } else {
        Some(read_opt(ctx, dns, q_end, dns_len)?)
    };

    // --- Answer ------------------------------------------------------------------------
    let value = match ANSWERS.get_value_ptr_mut(0, key) {
        Some(v) => v,
        None => {
            key.view = VIEW_ANY;
            ANSWERS.get_value_ptr_mut(0, key).ok_or(Counter::PassMiss)?
        }
    };
    // SAFETY: `value` points into the active inner map, which userspace never writes
    // while it is active (double buffering with an RCU grace period at every swap), so
    // it is neither freed nor changed during this program run.
    let a = unsafe { &*value };
    let body_len = usize::from(a.body_len);
    if body_len + OPT_LEN > MAX_BODY {
        return Err(Counter::PassTooBig);
    }
    let reply_len = q_end + body_len + if opt.is_some() { OPT_LEN } else { 0 };
    // SAFETY: as for ANY_DST4.
    let ours = unsafe { core::ptr::read_volatile(&UDP_PAYLOAD) };
    let limit = match opt {
        Some((payload, _)) => usize::from(payload.clamp(512, ours.max(512))),
        None => 512,
    };
    if reply_len > limit {
        return Err(Counter::PassTooBig); // userspace answers with TC=1
    }

    // --- The reply's UDP checksum, before anything is written ----------------------------
    let flags = a.flags | (qflags & (FLAG_RD | FLAG_CD));
    let arcount = a.arcount + u16::from(opt.is_some());
    let udp_len = (8 + reply_len) as u16;
    let mut sum = addr_sum;
    sum = csum_add(sum, u16::from(IPPROTO_UDP));
    sum = csum_add(sum, udp_len); // pseudo-header length
    sum = csum_add(sum, dport); // the reply's source port
    sum = csum_add(sum, sport);
    sum = csum_add(sum, udp_len);
    sum = csum_add(sum, id);
    sum = csum_add(sum, flags);
    sum = csum_add(sum, 1);
    sum = csum_add(sum, a.ancount);
    sum = csum_add(sum, a.nscount);
    sum = csum_add(sum, arcount);
    sum += qsum;
    let body_sum = csum_fold(a.body_sum);
    sum = csum_add(
        sum,
        if name_len & 1 == 1 {
            body_sum.swap_bytes()
        } else {
            body_sum
        },
    );
    let mut dnssec_ok = false;
    if let Some((_, d)) = opt {
        // The OPT the map holds after the body: root, type 41, our payload, version 0,
        // DO as the query's.
        dnssec_ok = d;
        let p = ours.to_be_bytes();
        let opt_bytes = [
            0,
            0,
            OPT_TYPE as u8,
            p[0],
            p[1],
            0,
            0,
            if d { 0x80 } else { 0 },
            0,
            0,
            0,
        ];
        sum = sum_at(sum, &opt_bytes, (name_len + body_len) & 1 == 1);
    }
    let mut udp_csum = !csum_fold(sum);
    if udp_csum == 0 {
        udp_csum = 0xffff; // RFC 768: 0 means "no checksum"
    }

    // --- Read what the reply needs from the query's headers, then resize -----------------
    let macs = read::<12>(ctx, 0, Counter::PassAdjust)?;
    let tci = if l3 > ETH_HLEN {
        Some(read::<2>(ctx, ETH_HLEN, Counter::PassAdjust)?)
    } else {
        None
    };
    let mut addrs = [0u8; 32];
    if v6 {
        addrs = read::<32>(ctx, l3 + 8, Counter::PassAdjust)?;
    } else {
        let a = read::<8>(ctx, l3 + 12, Counter::PassAdjust)?;
        addrs[..8].copy_from_slice(&a);
    }
    let q = Query {
        v6,
        l3,
        l4,
        dns,
        q_len: name_len + 4,
        addr_sum,
        sport,
        dport,
        macs,
        tci,
        addrs,
    };
    // Resize at the tail when the buffer allows (no byte moves). Otherwise grow at the
    // head: XDP guarantees headroom, while tailroom can be a few bytes (a veth copies
    // each packet into a tight page-pool fragment); moving the start back leaves the
    // question `shift` bytes past its new place.
    let delta = (dns + reply_len) as i64 - frame_len as i64;
    let mut shift = 0usize;
    // SAFETY (both helpers): the context pointer comes from the kernel for this run;
    // the helpers check the new length against the buffer.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta as i32) } != 0 {
        if delta > MAX_HEAD_GROWTH as i64
            || unsafe { bpf_xdp_adjust_head(ctx.ctx, -(delta as i32)) } != 0
        {
            return Err(Counter::PassAdjust);
        }
        shift = delta as usize;
    }

    // From here the frame is no longer the query: a failure drops it rather than pass
    // a half-written packet.
    let header = [id, flags, 1, a.ancount, a.nscount, arcount];
    if rewrite(ctx, &q, shift, udp_len, udp_csum, &header, scratch).is_err() {
        return Ok(xdp_action::XDP_DROP);
    }
    // The body, and the OPT after it for an EDNS query, in one store.
    let stored = body_len + if opt.is_some() { OPT_LEN } else { 0 };
    if stored > 0 {
        if stored > MAX_BODY {
            return Ok(xdp_action::XDP_DROP); // checked before the resize; restated for the verifier
        }
        // SAFETY: `a.body` holds MAX_BODY bytes and 0 < stored <= MAX_BODY; the helper
        // checks the destination range against the frame.
        let rc = unsafe {
            bpf_xdp_store_bytes(
                ctx.ctx,
                (dns + q_end) as u32,
                a.body.as_ptr() as *mut _,
                stored as u32,
            )
        };
        if rc != 0 {
            return Ok(xdp_action::XDP_DROP);
        }
    }
    if dnssec_ok && write(ctx, dns + q_end + body_len + 7, [0x80u8]).is_err() {
        return Ok(xdp_action::XDP_DROP);
    }
    if a.slot != NO_SLOT
        && let Some(hits) = HITS.get_ptr_mut(u32::from(a.slot))
    {
        // SAFETY: a per-CPU slot, as in `count`.
        unsafe { *hits += 1 };
    }
    Ok(xdp_action::XDP_TX)
}

/// Validates the query's OPT record the way userspace decodes it; returns the client's
/// UDP payload size and DO bit.
#[inline(always)]
fn read_opt(
    ctx: &XdpContext,
    dns: usize,
    q_end: usize,
    dns_len: usize,
) -> Result<(u16, bool), Counter> {
    // The OPT's fixed part must be inside the message and the frame.
    if q_end + OPT_LEN > dns_len {
        return Err(Counter::PassEdns);
    }
    let o = read::<OPT_LEN>(ctx, dns + q_end, Counter::PassEdns)?;
    if o[0] != 0 || u16::from_be_bytes([o[1], o[2]]) != OPT_TYPE {
        return Err(Counter::PassEdns); // not an OPT with the root owner
    }
    if o[6] != 0 {
        return Err(Counter::PassEdns); // version > 0: userspace answers BADVERS
    }
    let rdlen = usize::from(u16::from_be_bytes([o[9], o[10]]));
    if q_end + OPT_LEN + rdlen != dns_len {
        return Err(Counter::PassEdns); // options run past, or bytes follow the OPT
    }
    let mut off = q_end + OPT_LEN;
    let mut n = 0;
    while n < MAX_OPTIONS && off < dns_len {
        // The option header must be inside the message and the frame. An XDP frame
        // fits in a page, so offsets past 4 KiB cannot occur; the bound also lets the
        // verifier give the pointer a range.
        if off + 4 > dns_len || off > MAX_FRAME {
            return Err(Counter::PassEdns);
        }
        let oh = read::<4>(ctx, dns + off, Counter::PassEdns)?;
        let code = u16::from_be_bytes([oh[0], oh[1]]);
        let olen = usize::from(u16::from_be_bytes([oh[2], oh[3]]));
        if code == ECS_CODE {
            return Err(Counter::PassEcs);
        }
        if code == COOKIE_CODE && olen != 8 && !(16..=40).contains(&olen) {
            return Err(Counter::PassEdns); // userspace answers FORMERR
        }
        off += 4 + olen;
        n += 1;
    }
    if off != dns_len {
        return Err(Counter::PassEdns); // too many options, or one runs past the OPT
    }
    Ok((
        u16::from_be_bytes([o[3], o[4]]),
        u16::from_be_bytes([o[7], o[8]]) & 0x8000 != 0,
    ))
}

/// Writes the reply's headers into the resized frame, and moves the question down by
/// `shift` when the frame grew at the head. Every header byte is written from what was
/// read before the resize, from the start of the frame upward; the question is then
/// copied forward (to lower addresses), which is safe for overlapping ranges. The
/// resize invalidated every packet pointer: each access is re-derived and re-checked.
#[inline(always)]
fn rewrite(
    ctx: &XdpContext,
    q: &Query,
    shift: usize,
    udp_len: u16,
    udp_csum: u16,
    header: &[u16; 6],
    scratch: &mut Scratch,
) -> Result<(), ()> {
    let m = &q.macs;
    write(
        ctx,
        0,
        [
            m[6], m[7], m[8], m[9], m[10], m[11], m[0], m[1], m[2], m[3], m[4], m[5],
        ],
    )?;
    let ethertype = if q.v6 { ETH_P_IPV6 } else { ETH_P_IP }.to_be_bytes();
    match q.tci {
        Some(t) => {
            let v = ETH_P_8021Q.to_be_bytes();
            write(
                ctx,
                12,
                [v[0], v[1], t[0], t[1], ethertype[0], ethertype[1]],
            )?;
        }
        None => write(ctx, 12, ethertype)?,
    }
    let l = udp_len.to_be_bytes();
    if q.v6 {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&q.addrs[..16]);
        dst.copy_from_slice(&q.addrs[16..]);
        write(ctx, q.l3, [0x60, 0, 0, 0, l[0], l[1], IPPROTO_UDP, 64])?;
        write(ctx, q.l3 + 8, dst)?;
        write(ctx, q.l3 + 24, src)?;
    } else {
        let tot = (20 + udp_len).to_be_bytes();
        // Version/IHL, TOS 0, length, ID 0, DF (as the stack sends it), TTL 64, UDP; the
        // address words' sum is the same after the swap.
        let mut s = q.addr_sum;
        for w in [
            0x4500,
            u16::from_be_bytes(tot),
            0,
            0x4000,
            0x4000 | u16::from(IPPROTO_UDP),
        ] {
            s = csum_add(s, w);
        }
        let c = (!csum_fold(s)).to_be_bytes();
        let a = &q.addrs;
        write(
            ctx,
            q.l3,
            [
                0x45,
                0,
                tot[0],
                tot[1],
                0,
                0,
                0x40,
                0,
                64,
                IPPROTO_UDP,
                c[0],
                c[1],
            ],
        )?;
        write(
            ctx,
            q.l3 + 12,
            [a[4], a[5], a[6], a[7], a[0], a[1], a[2], a[3]],
        )?;
    }
    let (p, d, c) = (
        q.dport.to_be_bytes(),
        q.sport.to_be_bytes(),
        udp_csum.to_be_bytes(),
    );
    write(ctx, q.l4, [p[0], p[1], d[0], d[1], l[0], l[1], c[0], c[1]])?;
    let mut hdr = [0u8; DNS_HLEN];
    let mut k = 0;
    while k < 6 {
        let b = header[k].to_be_bytes();
        hdr[2 * k] = b[0];
        hdr[2 * k + 1] = b[1];
        k += 1;
    }
    write(ctx, q.dns, hdr)?;
    if shift > 0 {
        // The question is still `shift` bytes further on; copy it down (through scratch
        // memory: the ranges may overlap).
        // Through `opaque`: a length the verifier tracks back through the parse would
        // make it verify every earlier path again.
        let len = opaque(&mut scratch.slot, q.q_len);
        if len == 0 || len > MAX_NAME + 4 {
            return Err(()); // bounded by the caller; restated for the verifier
        }
        let from = (q.dns + DNS_HLEN + shift) as u32;
        let to = (q.dns + DNS_HLEN) as u32;
        // SAFETY: `scratch.question` holds MAX_NAME + 4 bytes and 0 < len <= MAX_NAME + 4; the helpers
        // check both packet ranges.
        unsafe {
            if bpf_xdp_load_bytes(
                ctx.ctx,
                from,
                scratch.question.as_mut_ptr() as *mut _,
                len as u32,
            ) != 0
            {
                return Err(());
            }
            if bpf_xdp_store_bytes(
                ctx.ctx,
                to,
                scratch.question.as_mut_ptr() as *mut _,
                len as u32,
            ) != 0
            {
                return Err(());
            }
        }
    }
    Ok(())
}
