//! Types shared by the XDP program and userspace: the answer map's key and value, counters, limits, checksum arithmetic.
//!
//! Every type is `#[repr(C)]` without padding (checked at compile time below) so the
//! kernel and userspace agree on every byte. With the `user` feature the types are
//! `aya::Pod` and can be map keys and values.
#![no_std]

/// Longest question name (wire form, with the root label) the XDP program answers.
/// Longer names are passed to userspace, which answers every name.
pub const MAX_NAME: usize = 64;
/// Room for an answer body (records after the question) and the OPT record after it.
/// Longer answers are answered by userspace.
pub const MAX_BODY: usize = 512;
/// Capacity of each answer map.
pub const MAX_ANSWERS: u32 = 65_536;
/// Counters of answers sent (`HITS`, per CPU): one per answer-map entry of a balanced
/// name, so userspace can put the answers the program sent into the DNS records. An
/// entry that gets no slot stays out of the map (userspace answers and counts it).
pub const MAX_SLOTS: u32 = 16_384;
/// [`AnswerValue::slot`] of an answer that is not counted (records of fixed names).
pub const NO_SLOT: u16 = u16::MAX;
/// View of map entries that hold for every view (userspace's `VIEW_ANY`).
pub const VIEW_ANY: u16 = u16::MAX;
/// Capacity of each view prefix trie (configured prefixes and resolvers placed by
/// latency).
pub const MAX_PREFIXES: u32 = 131_072;
/// Flag on a view trie value: an exact resolver entry written from latency figures
/// (the view is the value without the flag).
pub const RESOLVER_ENTRY: u16 = 0x8000;
/// Capacity of each map of resolvers seen by the program and not yet placed.
pub const MAX_SEEN: u32 = 4096;
/// Most listen addresses per family the program checks destinations against.
pub const MAX_LISTEN: usize = 8;
/// Length of the OPT record appended to answers of EDNS queries.
pub const OPT_LEN: usize = 11;

/// Key of the answer map: the lowercased wire name zero-padded to [`MAX_NAME`], the
/// query type and the view. Wire names are self-delimiting (they end at the root
/// label), so zero padding never makes two names equal.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AnswerKey {
    pub name: [u8; MAX_NAME],
    pub qtype: u16,
    pub view: u16,
}

/// Value of the answer map: what a response carries after the question, as the
/// userspace encoder made it (`dns_fastpath::answer::Answer`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerValue {
    /// QR, AA and RCODE; the program adds the query's RD and CD.
    pub flags: u16,
    pub ancount: u16,
    pub nscount: u16,
    /// Without the OPT record the program appends when the query had one.
    pub arcount: u16,
    /// Bytes of `body` that are the answer; the OPT record for EDNS queries follows them
    /// in `body` (`OPT_LEN` bytes: our payload size, DO clear; the program sets DO).
    pub body_len: u16,
    /// The answer's counter in `HITS`, below [`MAX_SLOTS`]; [`NO_SLOT`]: not counted.
    pub slot: u16,
    /// Folded 16-bit ones'-complement sum of `body[..body_len]` as if it started at an
    /// even offset ([`sum_bytes`]).
    pub body_sum: u32,
    pub body: [u8; MAX_BODY],
}

/// A counter slot of the per-CPU counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Answered in the driver (XDP_TX).
    Answered = 0,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...).
    PassNotIp,
    /// More than one VLAN tag.
    PassVlan,
    /// IP header that does not add up (version, lengths, IPv4 checksum).
    PassIpMalformed,
    /// IPv4 options.
    PassIpOptions,
    /// A fragment.
    PassFragment,
    /// Not UDP, or IPv6 extension headers.
    PassNotUdp,
    /// Not to a DNS address and port this server listens on.
    PassNotDns,
    /// UDP length that does not add up.
    PassUdpMalformed,
    /// DNS header outside the answered shape (QR, opcode, TC, section counts).
    PassDnsHeader,
    /// Question name the program does not take (compression, bad label, too long).
    PassName,
    /// Class other than IN.
    PassClass,
    /// An additional record other than a well-formed EDNS version 0 OPT, or trailing bytes.
    PassEdns,
    /// EDNS Client Subnet (the answer depends on the subnet).
    PassEcs,
    /// No map entry for this name, type and view.
    PassMiss,
    /// The answer would not fit what the client accepts (userspace sends TC=1).
    PassTooBig,
    /// The packet could not be resized.
    PassAdjust,
    /// An IPv4-mapped IPv6 source (userspace maps it to its IPv4 view).
    PassV4Mapped,
    /// Dropped: a rewrite failed after the frame was resized, so it could not be passed
    /// on unchanged. Never expected; counted so it would be seen.
    DropRewrite,
}

/// Number of counter slots.
pub const COUNTERS: usize = 19;

impl Counter {
    /// Every counter, in slot order.
    pub const ALL: [Counter; COUNTERS] = [
        Counter::Answered,
        Counter::PassNotIp,
        Counter::PassVlan,
        Counter::PassIpMalformed,
        Counter::PassIpOptions,
        Counter::PassFragment,
        Counter::PassNotUdp,
        Counter::PassNotDns,
        Counter::PassUdpMalformed,
        Counter::PassDnsHeader,
        Counter::PassName,
        Counter::PassClass,
        Counter::PassEdns,
        Counter::PassEcs,
        Counter::PassMiss,
        Counter::PassTooBig,
        Counter::PassAdjust,
        Counter::PassV4Mapped,
        Counter::DropRewrite,
    ];

    /// Name used in stats output.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Answered => "answered",
            Counter::PassNotIp => "not_ip",
            Counter::PassVlan => "vlan",
            Counter::PassIpMalformed => "ip_malformed",
            Counter::PassIpOptions => "ip_options",
            Counter::PassFragment => "fragment",
            Counter::PassNotUdp => "not_udp",
            Counter::PassNotDns => "not_dns",
            Counter::PassUdpMalformed => "udp_malformed",
            Counter::PassDnsHeader => "dns_header",
            Counter::PassName => "name",
            Counter::PassClass => "class",
            Counter::PassEdns => "edns",
            Counter::PassEcs => "ecs",
            Counter::PassMiss => "miss",
            Counter::PassTooBig => "too_big",
            Counter::PassAdjust => "adjust",
            Counter::PassV4Mapped => "v4_mapped",
            Counter::DropRewrite => "drop_rewrite",
        }
    }
}

/// Adds `v` (a 16-bit word) to a ones'-complement accumulator.
#[inline(always)]
pub const fn csum_add(sum: u32, v: u16) -> u32 {
    sum + v as u32
}

/// Folds a 32-bit accumulator to 16 bits (RFC 1071).
#[inline(always)]
pub const fn csum_fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The folded ones'-complement sum of `bytes` as if they started at an even offset.
/// Placed at an odd offset, the same bytes contribute `sum.swap_bytes()`.
pub fn sum_bytes(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum = csum_fold(csum_add(sum, word)) as u32;
    }
    csum_fold(sum)
}

// No padding anywhere: the kernel and userspace see the same bytes.
const _: () = assert!(core::mem::size_of::<AnswerKey>() == MAX_NAME + 4);
const _: () = assert!(core::mem::size_of::<AnswerValue>() == 16 + MAX_BODY);
const _: () = assert!(Counter::DropRewrite as usize + 1 == COUNTERS);
const _: () = assert!(MAX_SLOTS <= NO_SLOT as u32);

#[cfg(feature = "user")]
// SAFETY: plain old data: #[repr(C)], no padding (asserted above), every bit pattern valid.
unsafe impl aya::Pod for AnswerKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for AnswerValue {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_match_rfc1071() {
        // RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(
            sum_bytes(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        // An odd length pads with a zero byte.
        assert_eq!(sum_bytes(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        // At an odd offset a sum is byte-swapped: prepend a zero byte to check.
        let b = [0xab, 0xcd, 0xef];
        assert_eq!(
            sum_bytes(&[0, 0xab, 0xcd, 0xef]),
            sum_bytes(&b).swap_bytes()
        );
    }

    #[test]
    fn counter_names_are_unique() {
        for (i, a) in Counter::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i);
            for b in &Counter::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }
}
