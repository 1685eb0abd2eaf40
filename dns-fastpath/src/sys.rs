//! Batched datagram I/O (recvmmsg/sendmmsg): the crate's only `unsafe` code.
//!
//! A [`Batch`] owns every buffer and address the kernel writes into or reads from; the
//! iovec and mmsghdr arrays pointing at them are rebuilt right before each call, from
//! buffers that are never reallocated while the batch lives, so no pointer handed to
//! the kernel can dangle.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

/// Largest datagram read; a longer one is flagged truncated (and dropped by the caller).
pub const RECV_BUF: usize = 4096;

/// A set of datagram slots used for one recvmmsg and the sendmmsg of its replies.
pub struct Batch {
    bufs: Vec<Box<[u8; RECV_BUF]>>,
    lens: Vec<usize>,
    truncated: Vec<bool>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    /// Replies, one per slot; sent if non-empty.
    pub replies: Vec<Vec<u8>>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside `iov` and `hdrs` only ever point into buffers owned by
// the same `Batch`, and are rebuilt before each use; moving the batch to another thread
// moves those buffers with it.
unsafe impl Send for Batch {}

impl Batch {
    pub fn new(slots: usize) -> Batch {
        let slots = slots.max(1);
        Batch {
            bufs: (0..slots).map(|_| Box::new([0u8; RECV_BUF])).collect(),
            lens: vec![0; slots],
            truncated: vec![false; slots],
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            addrs: vec![unsafe { zeroed() }; slots],
            addr_lens: vec![0; slots],
            replies: (0..slots).map(|_| Vec::with_capacity(1232)).collect(),
            // SAFETY: iovec and mmsghdr are plain old data; all-zero (null pointers,
            // zero lengths) is a valid value, overwritten before any use.
            iov: vec![unsafe { zeroed() }; slots],
            hdrs: vec![unsafe { zeroed() }; slots],
        }
    }

    pub fn slots(&self) -> usize {
        self.bufs.len()
    }

    /// Receives up to `slots()` datagrams, blocking for the first (until the socket's
    /// read timeout). Returns how many arrived.
    pub fn recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        let fd: RawFd = sock.as_raw_fd();
        let n = self.slots();
        for i in 0..n {
            self.iov[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: RECV_BUF,
            };
            // SAFETY: plain old data, fully set below.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iov[i];
            h.msg_hdr.msg_iovlen = 1;
            self.hdrs[i] = h;
        }
        // SAFETY: `hdrs[..n]` point at `iov[i]`, `addrs[i]` and `bufs[i]`, all owned by
        // `self`, alive and not moved for the duration of the call; the kernel writes at
        // most `iov_len` / `msg_namelen` bytes into them.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = got as usize;
        for i in 0..got {
            let h = &self.hdrs[i];
            self.lens[i] = (h.msg_len as usize).min(RECV_BUF);
            self.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.addr_lens[i] = h.msg_hdr.msg_namelen;
            self.replies[i].clear();
        }
        Ok(got)
    }

    /// Datagram `i` and the reply buffer for it, borrowed together.
    pub fn slot(&mut self, i: usize) -> (&[u8], Option<SocketAddr>, bool, &mut Vec<u8>) {
        (
            &self.bufs[i][..self.lens[i]],
            to_socket_addr(&self.addrs[i], self.addr_lens[i]),
            self.truncated[i],
            &mut self.replies[i],
        )
    }

    /// Sends `replies[i]` for every `i < received` that is non-empty, to the address
    /// datagram `i` came from. Returns how many were sent.
    pub fn send(&mut self, sock: &impl AsRawFd, received: usize) -> io::Result<usize> {
        let fd = sock.as_raw_fd();
        let mut n = 0;
        for i in 0..received.min(self.slots()) {
            if self.replies[i].is_empty() {
                continue;
            }
            self.iov[n] = libc::iovec {
                iov_base: self.replies[i].as_mut_ptr().cast(),
                iov_len: self.replies[i].len(),
            };
            // SAFETY: plain old data, fully set below.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = self.addr_lens[i];
            h.msg_hdr.msg_iov = &mut self.iov[n];
            h.msg_hdr.msg_iovlen = 1;
            self.hdrs[n] = h;
            n += 1;
        }
        let mut sent = 0;
        while sent < n {
            // SAFETY: `hdrs[sent..n]` point at `iov`, `addrs` and `replies` entries owned
            // by `self` and untouched during the call; the kernel only reads them.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[sent..].as_mut_ptr(),
                    (n - sent) as libc::c_uint,
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if sent == 0 {
                    return Err(e);
                }
                // Skip the datagram that failed (e.g. an unreachable client), keep going.
                sent += 1;
                continue;
            }
            sent += r as usize;
        }
        Ok(n)
    }
}

/// Converts a kernel-written socket address.
fn to_socket_addr(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says this storage holds a sockaddr_in, and
            // sockaddr_storage is large enough and suitably aligned for it.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(a.sin_addr.s_addr).into(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn batch_round_trip_on_loopback() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..3u8 {
            client
                .send_to(&[i; 10], server.local_addr().unwrap())
                .unwrap();
        }
        let mut b = Batch::new(8);
        let mut got = 0;
        while got < 3 {
            let n = b.recv(&server).unwrap();
            for i in 0..n {
                let (data, from, cut, reply) = b.slot(i);
                assert_eq!(from, Some(client.local_addr().unwrap()));
                assert!(!cut);
                assert_eq!(data.len(), 10);
                reply.extend_from_slice(data);
                reply.push(0xff);
            }
            assert_eq!(b.send(&server, n).unwrap(), n);
            got += n;
        }
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            let (len, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(len, 11);
            assert_eq!(buf[10], 0xff);
        }
    }
}
