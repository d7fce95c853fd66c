//! /proc/locks: who holds the `flock` of a file. The pin directory's lock
//! is an `flock` on the directory itself (bpffs holds no file to write a
//! pid into), so the kernel's own table names the agent that holds it.

/// The pids holding an `flock` on the file `major:minor:ino`, in the
/// order /proc/locks lists them (waiters, the `->` lines, left out).
pub fn flock_holders(text: &str, major: u64, minor: u64, ino: u64) -> Vec<u32> {
    let mut pids = Vec::new();
    for line in text.lines() {
        // "1: FLOCK  ADVISORY  WRITE 14943 00:28:1548514 0 EOF"
        let f: Vec<&str> = line.split_whitespace().collect();
        let [_, class, _, _, pid, id, ..] = f.as_slice() else {
            continue;
        };
        if *class != "FLOCK" {
            continue;
        }
        let mut parts = id.split(':');
        let (Some(ma), Some(mi), Some(i), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let same = u64::from_str_radix(ma, 16) == Ok(major)
            && u64::from_str_radix(mi, 16) == Ok(minor)
            && i.parse() == Ok(ino);
        if let (true, Ok(pid)) = (same, pid.parse::<u32>()) {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// [`flock_holders`] of the running system's /proc/locks; empty when it
/// cannot be read.
pub fn holders(major: u64, minor: u64, ino: u64) -> Vec<u32> {
    std::fs::read_to_string("/proc/locks")
        .map(|t| flock_holders(&t, major, minor, ino))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_of_one_files_flock_is_found() {
        let text = "\
1: POSIX  ADVISORY  WRITE 700 00:28:1548514 0 EOF
2: FLOCK  ADVISORY  WRITE 14943 00:28:1548514 0 EOF
2: -> FLOCK  ADVISORY  WRITE 555 00:28:1548514 0 EOF
3: FLOCK  ADVISORY  WRITE 12 00:28:99 0 EOF
4: FLOCK  ADVISORY  READ 13 fd:01:1548514 0 EOF
5: OFDLCK ADVISORY  READ -1 00:28:1548514 0 EOF
6: FLOCK  ADVISORY  WRITE 77 1a:2b:5 0 EOF
garbage
7: FLOCK ADVISORY WRITE x 00:28:1548514 0 EOF
";
        assert_eq!(flock_holders(text, 0, 0x28, 1548514), vec![14943]);
        assert_eq!(flock_holders(text, 0xfd, 1, 1548514), vec![13]);
        assert_eq!(flock_holders(text, 0x1a, 0x2b, 5), vec![77]);
        assert!(flock_holders(text, 0, 0x28, 1).is_empty());
        assert!(flock_holders("", 0, 0, 0).is_empty());
    }
}
