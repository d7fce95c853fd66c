//! /proc/PID/stat: the start time of a process, which tells a process
//! from a later one with the same number.

/// Start time (clock ticks after boot) of a process: field 22 of
/// /proc/PID/stat.
pub fn start_time(pid: u32) -> Option<u64> {
    let mut buf = [0u8; 4096];
    parse_start_time(read_small(&format!("/proc/{pid}/stat"), &mut buf)?)
}

/// Reads a small /proc file (one line or a few dozen) into `buf`, as much
/// as fits: one open and, for the kernel's one-shot text files, one read
/// (it stops at a complete last line). Unlike `std::fs::read` it does not
/// stat the file first (a /proc file has no size) nor allocate.
pub(crate) fn read_small<'a>(path: &str, buf: &'a mut [u8]) -> Option<&'a [u8]> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if buf[n - 1] == b'\n' {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(&buf[..n])
}

/// Field 22 of the text of /proc/PID/stat.
pub fn parse_start_time(stat: &[u8]) -> Option<u64> {
    // comm may hold spaces and parentheses: fields resume after the last ')'
    let close = stat.iter().rposition(|&c| c == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Start time, and whether some thread of the process still runs (not a
/// zombie leader whose threads are all gone): fields 3, 20 and 22.
pub fn liveness(pid: u32) -> Option<(u64, bool)> {
    let mut buf = [0u8; 4096];
    parse_liveness(read_small(&format!("/proc/{pid}/stat"), &mut buf)?)
}

pub fn parse_liveness(stat: &[u8]) -> Option<(u64, bool)> {
    let close = stat.iter().rposition(|&c| c == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let f: Vec<&str> = rest.split_ascii_whitespace().take(20).collect();
    let state = *f.first()?;
    let threads: u64 = f.get(17)?.parse().ok()?;
    let start = f.get(19)?.parse().ok()?;
    let running = !matches!(state, "Z" | "X" | "x") || threads > 1;
    Some((start, running))
}

/// User and kernel CPU time of a process in clock ticks: fields 14
/// (utime) and 15 (stime) of /proc/PID/stat.
pub fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let mut buf = [0u8; 4096];
    parse_cpu_ticks(read_small(&format!("/proc/{pid}/stat"), &mut buf)?)
}

/// Fields 14 and 15 of the text of /proc/PID/stat.
pub fn parse_cpu_ticks(stat: &[u8]) -> Option<(u64, u64)> {
    let close = stat.iter().rposition(|&c| c == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let mut f = rest.split_ascii_whitespace().skip(11);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_comms() {
        let mut stat =
            b"1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 ".to_vec();
        stat.extend_from_slice(b"987654 10000000 200 18446744073709551615\n");
        assert_eq!(parse_start_time(&stat), Some(987654));
        assert_eq!(parse_cpu_ticks(&stat), Some((1, 2)));
        assert_eq!(parse_cpu_ticks(b"1 (x) S 1 1 1 0 -1 0 0 0 0 0 7"), None);
        assert_eq!(parse_start_time(b"garbage"), None);
        assert_eq!(parse_start_time(b"1 (x) S 1"), None);
        // a buffer smaller than the file holds its beginning
        let mut small = [0u8; 8];
        let path = format!("/proc/{}/stat", std::process::id());
        assert_eq!(read_small(&path, &mut small).map(|b| b.len()), Some(8));
        assert_eq!(read_small("/proc/nonexistent", &mut small), None);
        let me = start_time(std::process::id()).expect("own start time");
        assert!(me > 0);
    }

    #[test]
    fn a_zombie_leader_is_running_while_a_thread_is() {
        let line = |state: &str, threads: u32| {
            format!(
                "42 (a) b) {state} 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 {threads} 0 777 0 0"
            )
        };
        assert_eq!(parse_liveness(line("S", 1).as_bytes()), Some((777, true)));
        assert_eq!(parse_liveness(line("Z", 3).as_bytes()), Some((777, true)));
        assert_eq!(parse_liveness(line("Z", 1).as_bytes()), Some((777, false)));
        assert_eq!(parse_liveness(b"42 (a"), None);
    }
}
