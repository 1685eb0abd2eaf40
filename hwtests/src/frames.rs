//! Ethernet/IP/UDP frames around DNS messages, built and checked byte by byte for BPF_PROG_TEST_RUN.

use std::net::IpAddr;

/// MAC addresses used in test frames (locally administered).
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// A UDP datagram in an Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub vlan: Option<u16>,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
}

impl Datagram {
    /// A query from `src`:`sport` to `dst`:53, client → server.
    pub fn query(src: IpAddr, dst: IpAddr, sport: u16, payload: Vec<u8>) -> Datagram {
        Datagram {
            vlan: None,
            src_mac: CLIENT_MAC,
            dst_mac: SERVER_MAC,
            src,
            dst,
            sport,
            dport: 53,
            payload,
        }
    }
}

fn sum16(mut sum: u32, bytes: &[u8]) -> u32 {
    for pair in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([
            pair[0],
            pair.get(1).copied().unwrap_or(0),
        ]));
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The UDP checksum of `udp` (header with a zero checksum field, then payload).
pub fn udp_checksum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
    let mut s = 0u32;
    match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            s = sum16(s, &a.octets());
            s = sum16(s, &b.octets());
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            s = sum16(s, &a.octets());
            s = sum16(s, &b.octets());
        }
        _ => panic!("mixed address families"),
    }
    s += 17 + udp.len() as u32;
    s = sum16(s, udp);
    match !fold(s) {
        0 => 0xffff,
        c => c,
    }
}

/// Builds the frame, with correct lengths and checksums.
pub fn build(d: &Datagram) -> Vec<u8> {
    let mut f = Vec::with_capacity(64 + d.payload.len());
    f.extend_from_slice(&d.dst_mac);
    f.extend_from_slice(&d.src_mac);
    if let Some(tag) = d.vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&tag.to_be_bytes());
    }
    let udp_len = 8 + d.payload.len();
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&d.sport.to_be_bytes());
    udp.extend_from_slice(&d.dport.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&d.payload);
    let c = udp_checksum(d.src, d.dst, &udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    match (d.src, d.dst) {
        (IpAddr::V4(s), IpAddr::V4(t)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
            ip[8] = 64;
            ip[9] = 17;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&t.octets());
            let c = !fold(sum16(0, &ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(t)) => {
            f.extend_from_slice(&[0x86, 0xdd]);
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            ip[6] = 17;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&t.octets());
            f.extend_from_slice(&ip);
        }
        _ => panic!("mixed address families"),
    }
    f.extend_from_slice(&udp);
    f
}

/// Parses a frame the XDP program sent, checking every length and checksum exactly (no
/// trailing bytes, IPv4 header checksum, UDP checksum). Returns the datagram.
pub fn parse(frame: &[u8]) -> Result<Datagram, String> {
    parse_with(frame, true)
}

/// Parses a received query as the kernel would take it: IPv4 header checksum checked,
/// bytes after the IP datagram and after the UDP length ignored, UDP checksum not
/// checked (the XDP program does not check it either).
pub fn parse_query(frame: &[u8]) -> Result<Datagram, String> {
    parse_with(frame, false)
}

fn parse_with(frame: &[u8], strict: bool) -> Result<Datagram, String> {
    let need = |n: usize, what: &str| {
        if frame.len() < n {
            Err(format!(
                "frame of {} bytes ends inside the {what}",
                frame.len()
            ))
        } else {
            Ok(())
        }
    };
    need(14, "Ethernet header")?;
    let mut dst_mac = [0u8; 6];
    let mut src_mac = [0u8; 6];
    dst_mac.copy_from_slice(&frame[0..6]);
    src_mac.copy_from_slice(&frame[6..12]);
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let mut vlan = None;
    if ethertype == 0x8100 {
        need(18, "VLAN tag")?;
        vlan = Some(u16::from_be_bytes([frame[14], frame[15]]));
        ethertype = u16::from_be_bytes([frame[16], frame[17]]);
        off = 16;
    }
    let l3 = off + 2;
    let (src, dst, l4, ip_payload) = match ethertype {
        0x0800 => {
            need(l3 + 20, "IPv4 header")?;
            let ip = &frame[l3..l3 + 20];
            if ip[0] != 0x45 {
                return Err(format!("IPv4 version/IHL {:#x}", ip[0]));
            }
            if fold(sum16(0, ip)) != 0xffff {
                return Err("IPv4 header checksum is wrong".into());
            }
            let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if l3 + tot != frame.len() && (strict || l3 + tot > frame.len() || tot < 20) {
                return Err(format!(
                    "IPv4 total length {tot} does not match the frame ({} bytes after the IP start)",
                    frame.len() - l3
                ));
            }
            if ip[9] != 17 {
                return Err("not UDP".into());
            }
            let src = IpAddr::from([ip[12], ip[13], ip[14], ip[15]]);
            let dst = IpAddr::from([ip[16], ip[17], ip[18], ip[19]]);
            (src, dst, l3 + 20, tot - 20)
        }
        0x86dd => {
            need(l3 + 40, "IPv6 header")?;
            let ip = &frame[l3..l3 + 40];
            if ip[0] >> 4 != 6 || ip[6] != 17 {
                return Err("not IPv6/UDP".into());
            }
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if l3 + 40 + plen != frame.len() && (strict || l3 + 40 + plen > frame.len()) {
                return Err(format!(
                    "IPv6 payload length {plen} does not match the frame"
                ));
            }
            let mut a = [0u8; 16];
            let mut b = [0u8; 16];
            a.copy_from_slice(&ip[8..24]);
            b.copy_from_slice(&ip[24..40]);
            (IpAddr::from(a), IpAddr::from(b), l3 + 40, plen)
        }
        other => return Err(format!("ethertype {other:#06x}")),
    };
    let udp = &frame[l4..l4 + ip_payload];
    if udp.len() < 8 {
        return Err("UDP header cut".into());
    }
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if ulen != ip_payload && (strict || ulen > ip_payload || ulen < 8) {
        return Err(format!("UDP length {ulen} != IP payload {ip_payload}"));
    }
    let udp = &udp[..ulen];
    if strict {
        let got = u16::from_be_bytes([udp[6], udp[7]]);
        let mut zeroed = udp.to_vec();
        zeroed[6] = 0;
        zeroed[7] = 0;
        let want = udp_checksum(src, dst, &zeroed);
        if got != want {
            return Err(format!("UDP checksum {got:#06x}, should be {want:#06x}"));
        }
    }
    Ok(Datagram {
        vlan,
        src_mac,
        dst_mac,
        src,
        dst,
        sport: u16::from_be_bytes([udp[0], udp[1]]),
        dport: u16::from_be_bytes([udp[2], udp[3]]),
        payload: udp[8..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_parse_back() {
        for (src, dst) in [
            ("198.51.100.7", "192.0.2.1"),
            ("2001:db8:100::7", "2001:db8::1"),
        ] {
            for vlan in [None, Some(100)] {
                let mut d = Datagram::query(
                    src.parse().unwrap(),
                    dst.parse().unwrap(),
                    40000,
                    vec![1, 2, 3, 4, 5],
                );
                d.vlan = vlan;
                assert_eq!(parse(&build(&d)).unwrap(), d);
            }
        }
    }
}
