//! The floor of an XDP cost measurement: a two-instruction program run exactly like ours.
//!
//! The kernel's BPF run-time statistic times every run with two clock reads around the
//! program, and in live-frames mode each run starts on a fresh copy of the frame. On a
//! virtual machine those reads are not free, so the statistic has a floor that no
//! program can go under. This module loads `r0 = ACTION; exit` as an XDP program with
//! the raw `bpf(2)` calls (aya loads only ELF objects) and measures it the same way, so
//! the benchmark can say how much of our figure is the program's own work.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info, bpf_prog_type};

/// A loaded `r0 = ACTION; exit` XDP program.
pub struct EmptyXdp {
    fd: OwnedFd,
}

/// The statistic over one batch of live-frame runs.
pub struct FloorCost {
    /// The kernel's run-time statistic per run, in nanoseconds.
    pub program_ns: f64,
    /// The whole test run per packet (frame set-up and transmit included).
    pub total_ns: f64,
}

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, zero-initialised bpf_attr of the size we pass, and the
    // member the command reads was filled in by the caller; every pointer stored in it
    // refers to memory the caller keeps alive for the duration of this call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a C union of integer fields; all-zero is its documented
    // "unused" value and what the kernel requires in every byte a command does not use.
    unsafe { std::mem::zeroed() }
}

impl EmptyXdp {
    /// Loads the program; `action` is the XDP action it returns (e.g. 3 for XDP_TX).
    pub fn load(action: u32) -> io::Result<Self> {
        // BPF_MOV64_IMM(R0, action): opcode 0xb7, registers 0, offset 0, imm in the high
        // half; BPF_EXIT: opcode 0x95. Little-endian, as on every host we build for.
        let insns: [u64; 2] = [0xb7 | (u64::from(action) << 32), 0x95];
        let license = c"GPL";
        let mut attr = zeroed_attr();
        // SAFETY: writing the BPF_PROG_LOAD member of a zeroed union; no reads.
        let load = unsafe { &mut attr.__bindgen_anon_3 };
        load.prog_type = bpf_prog_type::BPF_PROG_TYPE_XDP as u32;
        load.insn_cnt = insns.len() as u32;
        load.insns = insns.as_ptr() as u64;
        load.license = license.as_ptr() as u64;
        for (d, s) in load.prog_name.iter_mut().zip(b"popnet_floor") {
            *d = *s as libc::c_char;
        }
        let fd = bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)?;
        // SAFETY: BPF_PROG_LOAD returned a new file descriptor that nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }

    fn stats(&self) -> io::Result<(u64, u64)> {
        // SAFETY: bpf_prog_info is plain integers; zero is valid for each.
        let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
        let mut attr = zeroed_attr();
        // SAFETY: writing the BPF_OBJ_GET_INFO_BY_FD member of a zeroed union.
        let get = unsafe { &mut attr.info };
        get.bpf_fd = self.fd.as_raw_fd() as u32;
        get.info_len = size_of::<bpf_prog_info>() as u32;
        get.info = std::ptr::from_mut(&mut info) as u64;
        bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        Ok((info.run_time_ns, info.run_cnt))
    }

    /// Runs the program `repeat` times on fresh copies of `frame` (live frames, batches
    /// of 64, as the project's own measurement does). Run-time statistics must be on
    /// (`aya::sys::enable_stats`) for `program_ns` to move.
    pub fn cost(&self, frame: &[u8], repeat: u32) -> io::Result<FloorCost> {
        let (t0, n0) = self.stats()?;
        let mut attr = zeroed_attr();
        // SAFETY: writing the BPF_PROG_TEST_RUN member of a zeroed union.
        let run = unsafe { &mut attr.test };
        run.prog_fd = self.fd.as_raw_fd() as u32;
        run.data_in = frame.as_ptr() as u64;
        run.data_size_in = frame.len() as u32;
        run.repeat = repeat.max(1);
        run.flags = aya_obj::generated::BPF_F_TEST_XDP_LIVE_FRAMES;
        run.batch_size = 64;
        bpf(bpf_cmd::BPF_PROG_TEST_RUN, &mut attr)?;
        // SAFETY: reading back the member the kernel filled in for this command.
        let duration = unsafe { attr.test.duration };
        let (t1, n1) = self.stats()?;
        Ok(FloorCost {
            program_ns: (t1 - t0) as f64 / (n1 - n0).max(1) as f64,
            total_ns: f64::from(duration),
        })
    }
}
