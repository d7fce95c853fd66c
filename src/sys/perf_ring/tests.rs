//! Tests of the ring reader on heap rings, and of real rings (root).

use super::*;
use crate::proc::cpus::online_cpus;
use crate::sys::perf_event::{open_cpu_clock, page_size};

const PAGE: usize = 4096;

/// A heap-backed ring with a writer side for tests.
struct HeapRing {
    _buf: Vec<u64>,
    ptr: *mut u8,
    len: usize,
    data_size: usize,
    head: u64,
}

impl HeapRing {
    fn new(data_size: usize) -> Self {
        Self::with_fields(data_size, true)
    }

    fn with_fields(data_size: usize, set_fields: bool) -> Self {
        let len = PAGE + data_size;
        let mut buf = vec![0u64; len / 8];
        let ptr = buf.as_mut_ptr().cast::<u8>();
        let mut r = HeapRing {
            _buf: buf,
            ptr,
            len,
            data_size,
            head: 0,
        };
        if set_fields {
            r.put(DATA_OFFSET_OFF, PAGE as u64);
            r.put(DATA_SIZE_OFF, data_size as u64);
        }
        r
    }

    fn put(&mut self, off: usize, v: u64) {
        assert!(off + 8 <= PAGE);
        // SAFETY: off + 8 is inside the metadata page of the allocation.
        unsafe { ptr::write_unaligned(self.ptr.add(off).cast::<u64>(), v) }
    }

    fn get(&self, off: usize) -> u64 {
        assert!(off + 8 <= PAGE);
        // SAFETY: as in `put`.
        unsafe { ptr::read_unaligned(self.ptr.add(off).cast::<u64>()) }
    }

    fn reader(&self) -> RingReader {
        // SAFETY: the allocation is 8-aligned, len bytes long, outlives
        // every reader in these tests, and is written single-threaded.
        unsafe { RingReader::from_raw(self.ptr, self.len, PAGE) }
    }

    /// Sets both head and tail to `pos` (an empty ring starting there).
    fn start_at(&mut self, pos: u64) {
        self.head = pos;
        self.put(DATA_HEAD_OFF, pos);
        self.put(DATA_TAIL_OFF, pos);
    }

    fn push(&mut self, rec: &[u8]) {
        for (i, b) in rec.iter().enumerate() {
            let off = (self.head + i as u64) as usize & (self.data_size - 1);
            // SAFETY: off < data_size, so PAGE + off < len.
            unsafe { *self.ptr.add(PAGE + off) = *b };
        }
        self.head += rec.len() as u64;
        self.put(DATA_HEAD_OFF, self.head);
    }

    fn tail(&self) -> u64 {
        self.get(DATA_TAIL_OFF)
    }
}

fn header(ty: u32, size: u16) -> Vec<u8> {
    let mut v = ty.to_ne_bytes().to_vec();
    v.extend_from_slice(&0u16.to_ne_bytes());
    v.extend_from_slice(&size.to_ne_bytes());
    v
}

fn sample(raw: &[u8]) -> Vec<u8> {
    let size = (HEADER_LEN + 4 + raw.len()).next_multiple_of(8);
    let mut v = header(PERF_RECORD_SAMPLE, size as u16);
    v.extend_from_slice(&(raw.len() as u32).to_ne_bytes());
    v.extend_from_slice(raw);
    v.resize(size, 0xAA);
    v
}

fn lost(id: u64, n: u64) -> Vec<u8> {
    let mut v = header(PERF_RECORD_LOST, 24);
    v.extend_from_slice(&id.to_ne_bytes());
    v.extend_from_slice(&n.to_ne_bytes());
    v
}

#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Sample(Vec<u8>),
    Lost(u64),
    Other(u32),
}

fn drain(r: &mut RingReader) -> Vec<Owned> {
    let mut out = Vec::new();
    let n = r.read(|rec| {
        out.push(match rec {
            Record::Sample(s) => Owned::Sample(s.to_vec()),
            Record::Lost(l) => Owned::Lost(l),
            Record::Other(t) => Owned::Other(t),
        })
    });
    assert_eq!(n, out.len());
    out
}

#[test]
fn single_record() {
    let mut h = HeapRing::new(4096);
    let mut r = h.reader();
    assert!(!r.pending());
    assert_eq!(r.read(|_| panic!("no records expected")), 0);
    h.push(&sample(b"hello"));
    assert!(r.pending());
    assert_eq!(drain(&mut r), vec![Owned::Sample(b"hello".to_vec())]);
    assert_eq!(h.tail(), h.head);
    assert!(!r.pending());
    assert_eq!(r.corrupt(), 0);
}

#[test]
fn many_records() {
    let mut h = HeapRing::new(4096);
    let mut r = h.reader();
    let mut expect = Vec::new();
    for i in 0..100u32 {
        let raw: Vec<u8> = (0..(i % 23)).map(|b| (b as u8) ^ (i as u8)).collect();
        h.push(&sample(&raw));
        expect.push(Owned::Sample(raw));
    }
    assert_eq!(drain(&mut r), expect);
    assert_eq!(h.tail(), h.head);
}

#[test]
fn many_wraps_in_small_ring() {
    let mut h = HeapRing::new(256);
    let mut r = h.reader();
    let mut rng = crate::rng::Rng::new(1);
    for round in 0..2000u64 {
        let mut expect = Vec::new();
        let mut used = 0;
        loop {
            let len = rng.index(60);
            let raw: Vec<u8> = (0..len).map(|i| (i as u64 ^ round) as u8).collect();
            let rec = sample(&raw);
            if used + rec.len() > 256 - 24 {
                break;
            }
            used += rec.len();
            h.push(&rec);
            expect.push(Owned::Sample(raw));
        }
        if round.is_multiple_of(7) {
            h.push(&lost(round, round * 3));
            expect.push(Owned::Lost(round * 3));
        }
        assert_eq!(drain(&mut r), expect, "round {round}");
        assert_eq!(h.tail(), h.head);
    }
    assert_eq!(r.corrupt(), 0);
}

#[test]
fn header_split_across_end() {
    let mut h = HeapRing::new(256);
    h.start_at(256 - 4);
    let mut r = h.reader();
    h.push(&sample(b"split-header"));
    assert_eq!(drain(&mut r), vec![Owned::Sample(b"split-header".to_vec())]);
    assert_eq!(h.tail(), h.head);
    assert_eq!(r.corrupt(), 0);
}

#[test]
fn payload_split_across_end() {
    // (start position, payload): header fits exactly and the size field
    // wraps; header and size fit and the payload wraps mid-way.
    let cases: [(u64, Vec<u8>); 2] = [
        (3 * 256 - 8, (0..40).collect()),
        (5 * 256 - 24, (100..130).collect()),
    ];
    for (start, raw) in cases {
        let mut h = HeapRing::new(256);
        h.start_at(start);
        let mut r = h.reader();
        h.push(&sample(&raw));
        h.push(&sample(b"next"));
        assert_eq!(
            drain(&mut r),
            vec![Owned::Sample(raw), Owned::Sample(b"next".to_vec())]
        );
        assert_eq!(h.tail(), h.head);
        assert_eq!(r.corrupt(), 0);
    }
}

#[test]
fn lost_and_other_records() {
    let mut h = HeapRing::new(512);
    let mut r = h.reader();
    h.push(&lost(7, 42));
    let mut other = header(3, 16);
    other.extend_from_slice(&[0; 8]);
    h.push(&other);
    h.push(&sample(&[]));
    assert_eq!(
        drain(&mut r),
        vec![Owned::Lost(42), Owned::Other(3), Owned::Sample(vec![])]
    );
}

#[test]
fn tail_advances_only_after_read() {
    let mut h = HeapRing::new(512);
    h.start_at(1000);
    let mut r = h.reader();
    h.push(&sample(b"a"));
    h.push(&sample(b"bcdefghijk"));
    assert_eq!(h.tail(), 1000);
    assert!(r.pending());
    assert_eq!(r.read(|_| {}), 2);
    assert_eq!(h.tail(), 1000 + 16 + 24);
    assert_eq!(h.tail(), h.head);
    assert_eq!(r.read(|_| {}), 0);
    assert_eq!(h.tail(), h.head);
}

#[test]
fn corrupt_sizes_skip_to_head() {
    for bad in [0u16, 4, 7, 200, u16::MAX] {
        let mut h = HeapRing::new(128);
        let mut r = h.reader();
        let mut rec = header(PERF_RECORD_SAMPLE, bad);
        rec.resize(64, 0);
        h.push(&rec);
        assert_eq!(
            r.read(|_| panic!("corrupt record delivered")),
            0,
            "size {bad}"
        );
        assert_eq!(r.corrupt(), 1, "size {bad}");
        assert_eq!(h.tail(), h.head);
        assert!(!r.pending());
        // The reader recovers for subsequent records.
        h.push(&sample(b"ok"));
        assert_eq!(drain(&mut r), vec![Owned::Sample(b"ok".to_vec())]);
        assert_eq!(r.corrupt(), 1);
    }
}

#[test]
fn malformed_bodies_are_skipped_individually() {
    let mut h = HeapRing::new(256);
    let mut r = h.reader();
    // Sample whose raw size exceeds the record.
    let mut s = header(PERF_RECORD_SAMPLE, 16);
    s.extend_from_slice(&100u32.to_ne_bytes());
    s.extend_from_slice(&[0; 4]);
    h.push(&s);
    // Sample too short for the size field; lost record too short.
    h.push(&header(PERF_RECORD_SAMPLE, 8));
    let mut l = header(PERF_RECORD_LOST, 16);
    l.extend_from_slice(&[0; 8]);
    h.push(&l);
    h.push(&sample(b"after"));
    assert_eq!(drain(&mut r), vec![Owned::Sample(b"after".to_vec())]);
    assert_eq!(r.corrupt(), 3);
    assert_eq!(h.tail(), h.head);
}

#[test]
fn head_too_far_ahead_is_corrupt() {
    let mut h = HeapRing::new(128);
    let mut r = h.reader();
    h.push(&sample(b"x"));
    h.head += 1000;
    h.put(DATA_HEAD_OFF, h.head);
    assert_eq!(r.read(|_| {}), 0);
    assert_eq!(r.corrupt(), 1);
    assert_eq!(h.tail(), h.head);
    // Head behind tail (wrapped difference is huge).
    h.put(DATA_HEAD_OFF, h.head - 8);
    assert_eq!(r.read(|_| {}), 0);
    assert_eq!(r.corrupt(), 2);
    // Fewer than 8 bytes available.
    h.start_at(0);
    h.put(DATA_HEAD_OFF, 4);
    assert_eq!(r.read(|_| {}), 0);
    assert_eq!(r.corrupt(), 3);
    assert_eq!(h.tail(), 4);
}

#[test]
fn zero_metadata_falls_back_to_page_size() {
    let mut h = HeapRing::with_fields(1024, false);
    let mut r = h.reader();
    assert_eq!(r.data_size(), 1024);
    h.push(&sample(b"legacy"));
    assert_eq!(drain(&mut r), vec![Owned::Sample(b"legacy".to_vec())]);
}

#[test]
fn invalid_metadata_gives_inert_reader() {
    for (off, size) in [
        (PAGE as u64, 1000u64),
        (PAGE as u64, 8192),
        (8, 1024),
        (u64::MAX, 1024),
    ] {
        let mut h = HeapRing::new(1024);
        h.put(DATA_OFFSET_OFF, off);
        h.put(DATA_SIZE_OFF, size);
        let mut r = h.reader();
        assert_eq!(r.data_size(), 0);
        h.push(&sample(b"x"));
        assert!(!r.pending());
        assert_eq!(r.read(|_| {}), 0);
    }
    // SAFETY: a null base is rejected before any access.
    let mut r = unsafe { RingReader::from_raw(ptr::null_mut(), 0, PAGE) };
    assert_eq!(r.read(|_| {}), 0);
    assert!(!r.pending());
}

/// A fuzz input whose data area is tiled with plausible records and whose
/// tail/head land on record boundaries (possibly wrapping the end).
fn structured_input(next: &mut impl FnMut() -> u64) -> (Vec<u8>, usize) {
    let sel = (next() % 6) as u8;
    let ds = 8usize << sel;
    let mut body = Vec::new();
    let mut starts = Vec::new();
    while body.len() < ds {
        starts.push(body.len());
        let r = next();
        let ty = [PERF_RECORD_SAMPLE, PERF_RECORD_LOST, 3][(r % 3) as usize];
        let size = if r.is_multiple_of(31) {
            (r >> 8) as u16
        } else {
            (((r >> 8) % 8 + 1) * 8) as u16
        };
        let mut rec = header(ty, size);
        let raw_len = if r.is_multiple_of(13) {
            r >> 20
        } else {
            (r >> 20) % 8
        };
        rec.extend_from_slice(&(raw_len as u32).to_ne_bytes());
        rec.resize(usize::from(size).max(12), (r >> 40) as u8);
        body.extend_from_slice(&rec);
    }
    body.truncate(ds);
    let rot = starts[(next() % starts.len() as u64) as usize];
    let end = starts[(next() % starts.len() as u64) as usize];
    let mut delta = ((end + ds - rot) % ds) as u64;
    if delta == 0 && next().is_multiple_of(2) {
        delta = ds as u64;
    }
    let tail = (next() & !(ds as u64 - 1)) + rot as u64;
    let mut input = vec![sel, 0];
    input.extend_from_slice(&tail.to_le_bytes());
    input.extend_from_slice(&delta.to_le_bytes());
    input.extend_from_slice(&body);
    (input, starts.len())
}

#[test]
fn fuzz_random_inputs() {
    let mut rng = crate::rng::Rng::new(0x9E37_79B9_7F4A_7C15);
    let mut next = || rng.next_u64();
    fuzz_one(&[]);
    fuzz_one(&[0xff; 64]);
    let mut delivered = 0usize;
    for i in 0..100_000u32 {
        let input = if i % 2 == 0 {
            structured_input(&mut next).0
        } else {
            let len = (next() % 300) as usize;
            (0..len).map(|_| next() as u8).collect()
        };
        // fuzz_one is exactly fuzz_inner without the result.
        let (n, pending) = fuzz_inner(&input, &mut |_| {});
        delivered += n;
        assert!(!pending, "reader left data pending for input {input:?}");
    }
    assert!(delivered > 10_000, "fuzz inputs too shallow: {delivered}");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn real_ring_opens() {
    if !is_root() && crate::sys::fake::may_skip("real_ring_opens needs root") {
        return;
    }
    let mut ring = PerfRing::open_bpf_output(0, 8, 1).expect("open BPF_OUTPUT ring");
    assert_eq!(ring.cpu(), 0);
    assert!(ring.reader.data_size() == 8 * page_size().unwrap());
    assert!(!ring.pending());
    assert_eq!(ring.read(|_| {}), 0);
    assert_eq!(ring.corrupt(), 0);

    let mut poll = mio::Poll::new().unwrap();
    poll.registry()
        .register(&mut ring, mio::Token(0), mio::Interest::READABLE)
        .unwrap();
    let mut events = mio::Events::with_capacity(4);
    poll.poll(&mut events, Some(std::time::Duration::from_millis(10)))
        .unwrap();
    assert!(events.is_empty());
    poll.registry().deregister(&mut ring).unwrap();

    let clock = open_cpu_clock(0, 99).expect("open cpu-clock");
    assert!(clock.as_raw_fd() >= 0);
}

#[test]
fn real_rings_all_cpus_and_errors() {
    if !is_root() && crate::sys::fake::may_skip("real_rings_all_cpus_and_errors needs root") {
        return;
    }
    let mut rings = PerfRings::open_bpf_output(&online_cpus().unwrap(), 1, 1).expect("open all");
    assert_eq!(rings.len(), online_cpus().unwrap().len());
    assert!(!rings.is_empty());
    for ring in rings.iter_mut() {
        assert_eq!(ring.read(|_| {}), 0);
        assert!(ring.as_fd().as_raw_fd() >= 0);
    }
    let cpus: Vec<u32> = rings.iter().map(PerfRing::cpu).collect();
    assert_eq!(cpus, online_cpus().unwrap());

    let e = PerfRing::open_bpf_output(0, 3, 1).err().unwrap();
    assert_eq!(e.source.kind(), io::ErrorKind::InvalidInput);
    let e = PerfRing::open_bpf_output(4095, 1, 1).err().unwrap();
    let errno = e.errno();
    assert!(errno == libc::EINVAL || errno == libc::ENODEV, "{e}");
    assert!(
        e.to_string()
            .starts_with("perf_event_open on BPF_OUTPUT, cpu 4095: "),
        "{e}"
    );
    assert!(open_cpu_clock(0, 0).is_err());
}

#[test]
fn cpu_clock_events_through_the_fake() {
    use crate::sys::fake;
    fake::reset();
    fake::perf::install();
    let _fd = open_cpu_clock(1, 99).unwrap();
    assert!(open_cpu_clock(0, 0).is_err(), "a zero frequency is refused");
    let opened = fake::perf::opened();
    assert_eq!(opened.len(), 1, "{opened:?}");
    let o = &opened[0];
    // PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK, 99 Hz (freq bit 10)
    assert_eq!((o.cpu, o.type_, o.config, o.period_or_freq), (1, 1, 0, 99));
    assert_eq!(o.flags, 1 << 10);
    fake::reset();
}

#[test]
fn a_ring_through_the_fake_wraps_many_times_in_order() {
    use crate::sys::fake;
    fake::reset();
    fake::perf::install();
    let mut ring = PerfRing::open_bpf_output(0, 1, 1).unwrap();
    let mut next = 0u32;
    let mut seen = Vec::new();
    for round in 0..50u32 {
        // records of varying sizes, so they straddle the end of the ring
        for _ in 0..(round % 7 + 20) {
            let raw: Vec<u8> = next.to_ne_bytes().repeat(1 + (next % 5) as usize);
            assert!(
                fake::perf::output_sample(ring.as_fd(), &raw),
                "room for {next}"
            );
            next += 1;
        }
        ring.read(|r| match r {
            Record::Sample(s) => seen.push(u32::from_ne_bytes(s[..4].try_into().unwrap())),
            other => panic!("{other:?}"),
        });
    }
    assert_eq!(seen, (0..next).collect::<Vec<_>>());
    assert!(next as usize * 16 > 4 * 4096, "wrapped several times");
    assert_eq!(ring.corrupt(), 0);
    fake::reset();
}
