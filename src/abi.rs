//! Rust mirrors of the structures in `bpf/pidmap.h`, with the helpers that
//! build trie keys. Sizes and offsets are unit-tested against the C layout.

/// prefix_len of a full pid + address lookup.
pub const FULL_PREFIX: u32 = 96;
pub const TRIE_MAX_ENTRIES: u32 = 1 << 20;
pub const EVENTS_MAX_ENTRIES: u32 = 65536;
pub const TRIE_NAME: &str = "pid_page_to_mapping_info";
pub const EVENTS_NAME: &str = "pid_events";
/// Largest bias the value can hold (56 bits).
pub const BIAS_MASK: u64 = (1 << 56) - 1;

/// Key of `pid_page_to_mapping_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PidPage {
    pub prefix_len: u32,
    pid_be: u32,
    page_be: u64,
}

impl PidPage {
    /// The key of an address block of `block_len` bits (0..=64).
    pub fn new(pid: u32, page: u64, block_len: u32) -> PidPage {
        PidPage {
            prefix_len: 32 + block_len,
            pid_be: pid.to_be(),
            page_be: page.to_be(),
        }
    }

    /// The per-process marker: page 0, full prefix.
    pub fn marker(pid: u32) -> PidPage {
        PidPage::new(pid, 0, 64)
    }

    /// A key with an arbitrary prefix_len (tests of malformed keys).
    pub fn with_prefix_len(pid: u32, page: u64, prefix_len: u32) -> PidPage {
        PidPage {
            prefix_len,
            pid_be: pid.to_be(),
            page_be: page.to_be(),
        }
    }

    pub fn pid(&self) -> u32 {
        u32::from_be(self.pid_be)
    }

    pub fn page(&self) -> u64 {
        u64::from_be(self.page_be)
    }

    pub fn is_marker(&self) -> bool {
        self.prefix_len == FULL_PREFIX && self.page_be == 0
    }
}

/// Value of `pid_page_to_mapping_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MappingInfo {
    pub file_id: u64,
    pub bias_and_prog: u64,
}

impl MappingInfo {
    /// A file mapping; `None` when the bias does not fit 56 bits.
    pub fn new(file_id: u64, bias: u64) -> Option<MappingInfo> {
        (bias <= BIAS_MASK).then_some(MappingInfo {
            file_id,
            bias_and_prog: bias,
        })
    }

    /// The marker value: file_id 0, bias = process start time.
    pub fn marker(start_time: u64) -> MappingInfo {
        MappingInfo {
            file_id: 0,
            bias_and_prog: start_time & BIAS_MASK,
        }
    }

    pub fn bias(&self) -> u64 {
        self.bias_and_prog & BIAS_MASK
    }
}

/// `struct pidmap_config`, pidmap_config[0].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub track_all: u32,
    pub track_children: u32,
    pub kernel_stacks: u32,
    /// Tests: wake user space for every request (no latch).
    pub wake_every_request: u32,
    pub request_interval_ns: u64,
}

pub const SAMPLE_UNKNOWN_PROCESS: u32 = 1 << 0;
pub const SAMPLE_USER_STACK_ERROR: u32 = 1 << 1;
pub const SAMPLE_KERNEL_STACK_ERROR: u32 = 1 << 2;
pub const SAMPLE_REQUESTED: u32 = 1 << 3;
pub const SAMPLE_KTHREAD: u32 = 1 << 4;
pub const MAX_USER_FRAMES: usize = 127;
pub const MAX_KERNEL_FRAMES: usize = 127;

/// `struct sample_header`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleHeader {
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    pub user_frames: u16,
    pub kernel_frames: u16,
    pub flags: u32,
    pub pad: u32,
    pub time_ns: u64,
    pub comm: [u8; 16],
}

/// `struct sample_frame`: file_id 0 means unresolved, offset = raw ip.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleFrame {
    pub file_id: u64,
    pub offset: u64,
}

/// One decoded sample record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub header: SampleHeader,
    pub user: Vec<SampleFrame>,
    pub kernel: Vec<u64>,
}

impl Sample {
    /// Decodes a raw sample record; `None` when it is malformed (short,
    /// frame counts beyond the limits or beyond the record).
    pub fn parse(raw: &[u8]) -> Option<Sample> {
        let header: SampleHeader = crate::sys::read_plain(raw)?;
        let nu = header.user_frames as usize;
        let nk = header.kernel_frames as usize;
        if nu > MAX_USER_FRAMES || nk > MAX_KERNEL_FRAMES {
            return None;
        }
        let hs = std::mem::size_of::<SampleHeader>();
        let need = hs + nu * 16 + nk * 8;
        if raw.len() < need {
            return None;
        }
        let mut user = Vec::with_capacity(nu);
        for i in 0..nu {
            user.push(crate::sys::read_plain(&raw[hs + i * 16..])?);
        }
        let kbase = hs + nu * 16;
        let mut kernel = Vec::with_capacity(nk);
        for i in 0..nk {
            kernel.push(crate::sys::read_plain(&raw[kbase + i * 8..])?);
        }
        Some(Sample {
            header,
            user,
            kernel,
        })
    }

    /// Encodes a sample the way the BPF program lays it out (tests, fuzz).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = crate::sys::bytes_of(std::slice::from_ref(&self.header)).to_vec();
        out.extend_from_slice(crate::sys::bytes_of(&self.user));
        out.extend_from_slice(crate::sys::bytes_of(&self.kernel));
        out
    }

    pub fn comm(&self) -> String {
        let end = self.header.comm.iter().position(|&c| c == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.header.comm[..end]).into_owned()
    }
}

/// Value of `sample_requests` (per-process request rate limit).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestState {
    pub last_ns: u64,
    pub gap_ns: u64,
    pub count: u64,
}

pub const SAMPLER_STAT_NAMES: [&str; 10] = [
    "samples",
    "out_of_scope",
    "unknown_process",
    "frames",
    "unresolved_frames",
    "requests",
    "requests_suppressed",
    "output_errors",
    "stack_errors",
    "kthread",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_pidmap_h() {
        assert_eq!(size_of::<PidPage>(), 16);
        assert_eq!(offset_of!(PidPage, prefix_len), 0);
        assert_eq!(offset_of!(PidPage, pid_be), 4);
        assert_eq!(offset_of!(PidPage, page_be), 8);
        assert_eq!(size_of::<MappingInfo>(), 16);
        assert_eq!(offset_of!(MappingInfo, bias_and_prog), 8);
        assert_eq!(size_of::<Config>(), 24);
        assert_eq!(offset_of!(Config, kernel_stacks), 8);
        assert_eq!(offset_of!(Config, request_interval_ns), 16);
        assert_eq!(size_of::<SampleHeader>(), 48);
        assert_eq!(offset_of!(SampleHeader, cpu), 8);
        assert_eq!(offset_of!(SampleHeader, user_frames), 12);
        assert_eq!(offset_of!(SampleHeader, kernel_frames), 14);
        assert_eq!(offset_of!(SampleHeader, flags), 16);
        assert_eq!(offset_of!(SampleHeader, time_ns), 24);
        assert_eq!(offset_of!(SampleHeader, comm), 32);
        assert_eq!(size_of::<SampleFrame>(), 16);
    }

    #[test]
    fn keys_are_big_endian_with_host_prefix() {
        let k = PidPage::new(0x01020304, 0x7f00_0000_1000, 52);
        let b = crate::sys::bytes_of(std::slice::from_ref(&k));
        assert_eq!(&b[0..4], &84u32.to_ne_bytes());
        assert_eq!(&b[4..8], &[1, 2, 3, 4]);
        assert_eq!(&b[8..16], &0x7f00_0000_1000u64.to_be_bytes());
        assert_eq!(k.pid(), 0x01020304);
        assert_eq!(k.page(), 0x7f00_0000_1000);
        let m = PidPage::marker(7);
        assert!(m.is_marker());
        assert_eq!(m.prefix_len, 96);
        assert!(!k.is_marker());
    }

    #[test]
    fn bias_must_fit_56_bits() {
        assert!(MappingInfo::new(1, BIAS_MASK).is_some());
        assert!(MappingInfo::new(1, BIAS_MASK + 1).is_none());
        assert_eq!(MappingInfo::marker(1234).bias(), 1234);
    }

    #[test]
    fn samples_round_trip_and_reject_garbage() {
        let s = Sample {
            header: SampleHeader {
                pid: 5,
                tid: 6,
                user_frames: 2,
                kernel_frames: 1,
                comm: *b"work\0\0\0\0\0\0\0\0\0\0\0\0",
                ..Default::default()
            },
            user: vec![
                SampleFrame {
                    file_id: 9,
                    offset: 0x10,
                },
                SampleFrame {
                    file_id: 0,
                    offset: 0x20,
                },
            ],
            kernel: vec![0xffff_ffff_8100_0000],
        };
        let raw = s.encode();
        assert_eq!(Sample::parse(&raw), Some(s.clone()));
        assert_eq!(s.comm(), "work");
        assert_eq!(Sample::parse(&raw[..raw.len() - 1]), None);
        assert_eq!(Sample::parse(&[0u8; 10]), None);
        let mut bad = raw.clone();
        bad[12] = 200; // user_frames beyond the limit
        assert_eq!(Sample::parse(&bad), None);
    }
}
