//! The loop's rings through the fake kernel: opened and wired into the
//! map and the poll as the agent does, written as the kernel would (lost
//! records included), read as the loop does.

use super::*;
use crate::abi::{SampleFrame, SampleHeader};
use crate::sys::bpf::MAP_TYPE_HASH;
use crate::sys::fake::{self, FakeMap};
use mio::Events;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

/// The fake kernel with an array of `cpus` slots for the ring fds, the
/// rings opened and registered at `base`, and the poll.
fn wired(pages: usize, wakeup: u32, base: usize) -> (Poll, MapHandle, PerfRings) {
    fake::reset();
    let cpus = crate::proc::cpus::online_cpus().unwrap();
    let slots = cpus.iter().max().unwrap() + 1;
    fake::bpf::install(FakeMap::new(4, 4, slots as usize));
    fake::perf::install();
    let poll = Poll::new().unwrap();
    // a PERF_EVENT_ARRAY to the kernel; the fake answers any type alike
    let map = MapHandle::create(MAP_TYPE_HASH, "events", 4, 4, slots, 0).unwrap();
    let rings = open_rings(&poll, &map, pages, wakeup, base).unwrap();
    (poll, map, rings)
}

/// Polls until a token decoding to `want` shows up; fails after 5 s
/// saying what it waited for.
fn wait_for(poll: &mut Poll, want: Source) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut events = Events::with_capacity(16);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no readiness of {want:?} within 5 s");
        poll.poll(&mut events, Some(left)).unwrap();
        if events.iter().any(|e| Source::of(e.token()) == want) {
            return;
        }
    }
}

/// Whether any event is ready now.
fn ready_now(poll: &mut Poll) -> Vec<Source> {
    let mut events = Events::with_capacity(16);
    poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
    events.iter().map(|e| Source::of(e.token())).collect()
}

fn fd_of(ring: &PerfRing) -> BorrowedFd<'_> {
    ring.as_fd()
}

#[test]
fn request_rings_are_one_per_cpu_in_the_map_and_the_poll() {
    let (_poll, _map, rings) = wired(1, 1, RING_BASE);
    let cpus = crate::proc::cpus::online_cpus().unwrap();
    assert_eq!(rings.iter().map(PerfRing::cpu).collect::<Vec<_>>(), cpus);
    // the BPF side finds each CPU's ring at its index
    let stored = fake::bpf::with(|k| k.entries.clone());
    for ring in rings.iter() {
        let key = ring.cpu().to_ne_bytes().to_vec();
        let fd = ring.as_fd().as_raw_fd() as u32;
        assert_eq!(stored.get(&key), Some(&fd.to_ne_bytes().to_vec()));
    }
    // BPF output events, one sample per wake-up, enabled and mapped
    let opened = fake::perf::opened();
    assert_eq!(opened.len(), cpus.len());
    for (o, cpu) in opened.iter().zip(&cpus) {
        assert_eq!((o.cpu, o.type_, o.config), (*cpu, 1, 10), "{o:?}");
        assert_eq!((o.wakeup_events, o.enabled, o.mapped), (1, true, true));
    }
    fake::reset();
}

/// A request record as the BPF side writes it (`struct report_event`).
fn request(pid: u32) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&pid.to_ne_bytes());
    r.extend_from_slice(&pid.to_ne_bytes());
    r.extend_from_slice(&1u64.to_ne_bytes());
    r.extend_from_slice(&2u64.to_ne_bytes());
    r.extend_from_slice(&0u32.to_ne_bytes());
    r.extend_from_slice(&0u32.to_ne_bytes());
    r
}

#[test]
fn a_lost_request_record_asks_for_a_resync_of_everything() {
    let (mut poll, _map, mut rings) = wired(1, 1, RING_BASE);
    let cpu = rings.iter().last().unwrap().cpu();
    let ring = rings.get_mut(cpu).unwrap();
    let before = COUNTERS.snapshot();
    // a request's wake-up alone: read, nothing to re-sync
    let mut records = Vec::new();
    assert!(fake::perf::output_sample(fd_of(ring), &request(7)));
    wait_for(&mut poll, Source::Requests(cpu));
    assert!(!read_requests(ring, &mut records), "nothing was lost");
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].pid, records[0].tid), (7, 7));
    // the ring fills: the record that does not fit is dropped and
    // counted; the BPF side's outputs drop 3 more meanwhile
    let mut written = 0;
    while fake::perf::output_sample(fd_of(ring), &request(8)) {
        written += 1;
    }
    assert!(written > 60, "a page of 32-byte records ({written})");
    fake::perf::drop_records(fd_of(ring), 3);
    // what is in the ring came before the losses are known
    assert!(
        !read_requests(ring, &mut records),
        "the losses are not reported yet"
    );
    assert_eq!(COUNTERS.snapshot().since(&before).lost_records, 0);
    // the next record that fits carries them
    assert!(fake::perf::output_sample(fd_of(ring), &request(9)));
    wait_for(&mut poll, Source::Requests(cpu));
    assert!(
        read_requests(ring, &mut records),
        "lost records: re-sync everything"
    );
    assert_eq!(COUNTERS.snapshot().since(&before).lost_records, 1 + 3);
    assert!(!read_requests(ring, &mut records), "read once");
    // a record too short to be a request counts as lost
    assert!(fake::perf::output_sample(fd_of(ring), &[1, 2, 3, 4]));
    wait_for(&mut poll, Source::Requests(cpu));
    assert!(read_requests(ring, &mut records), "a malformed record");
    fake::reset();
}

fn sample(pid: u32, frames: &[(u64, u64)]) -> Sample {
    Sample {
        header: SampleHeader {
            pid,
            tid: pid,
            user_frames: frames.len() as u16,
            kernel_frames: 1,
            comm: *b"fake\0\0\0\0\0\0\0\0\0\0\0\0",
            ..Default::default()
        },
        user: frames
            .iter()
            .map(|&(file_id, offset)| SampleFrame { file_id, offset })
            .collect(),
        kernel: vec![0xffff_ffff_8100_0000],
    }
}

#[test]
fn samples_are_decoded_and_the_malformed_and_lost_ones_counted() {
    let (mut poll, _map, mut rings) = wired(2, 16, SAMPLE_RING_BASE);
    let cpu = rings.iter().next().unwrap().cpu();
    let ring = rings.get_mut(cpu).unwrap();
    let before = COUNTERS.snapshot();
    let a = sample(100, &[(7, 0x1234), (8, 0x10)]);
    let b = sample(200, &[(9, 0x99)]);
    fake::perf::drop_records(fd_of(ring), 4);
    assert!(fake::perf::output_sample(fd_of(ring), &a.encode()));
    assert!(fake::perf::output_sample(fd_of(ring), &[1, 2, 3])); // short
    let mut too_many = b.encode();
    too_many[12..14].copy_from_slice(&u16::MAX.to_ne_bytes()); // user_frames
    assert!(fake::perf::output_sample(fd_of(ring), &too_many));
    assert!(fake::perf::output_sample(fd_of(ring), &b.encode()));
    // 16 samples per wake-up: 4 do not wake the loop yet
    assert!(
        !ready_now(&mut poll).contains(&Source::Samples(cpu)),
        "woken before 16 samples"
    );
    fake::perf::wake(fd_of(ring));
    wait_for(&mut poll, Source::Samples(cpu));
    assert_eq!(read_samples(ring), vec![a, b]);
    let d = COUNTERS.snapshot().since(&before);
    assert_eq!(
        (d.samples_read, d.samples_malformed, d.samples_lost),
        (2, 2, 4)
    );
    assert!(read_samples(ring).is_empty(), "read once");
    fake::reset();
}

#[test]
fn a_pidfd_turning_readable_wakes_the_loop_as_the_exit_of_its_pid() {
    use mio::unix::SourceFd;
    fake::reset();
    fake::pidfd::install();
    let mut poll = Poll::new().unwrap();
    // a pid beyond any ring's token range: pid_max can be 2^22
    let pid = (1 << 22) - 1;
    let fd = crate::sys::pidfd::pidfd_open(pid).unwrap();
    poll.registry()
        .register(
            &mut SourceFd(&fd.as_raw_fd()),
            Source::pidfd(pid),
            Interest::READABLE,
        )
        .unwrap();
    assert!(ready_now(&mut poll).is_empty(), "alive: no event");
    assert_eq!(fake::pidfd::exit(pid), 1);
    wait_for(&mut poll, Source::Exit(pid));
    fake::reset();
}
