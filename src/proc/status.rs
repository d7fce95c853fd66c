//! /proc/PID/status: the real uid of a process, and its memory figures.

/// The real uid of a process from the text of /proc/PID/status.
pub fn parse_real_uid(status: &[u8]) -> Option<u32> {
    // the text may be cut (a bounded read) inside a character
    let text = match std::str::from_utf8(status) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&status[..e.valid_up_to()]).ok()?,
    };
    let line = text.lines().find(|l| l.starts_with("Uid:"))?;
    line["Uid:".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The real uid of `pid` (None when it is gone).
pub fn real_uid(pid: u32) -> Option<u32> {
    let mut buf = [0u8; 4096];
    parse_real_uid(super::stat::read_small(
        &format!("/proc/{pid}/status"),
        &mut buf,
    )?)
}

/// A "kB" field of /proc/PID/status (`VmRSS`, `VmHWM`); 0 once the
/// process is gone.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_uid_is_the_first_field() {
        let s = b"Name:\tx\nUmask:\t0022\nState:\tS\nUid:\t1000\t0\t0\t0\nGid:\t5\t5\t5\t5\n";
        assert_eq!(parse_real_uid(s), Some(1000));
        assert_eq!(parse_real_uid(b"Name:\tx\n"), None);
        assert_eq!(parse_real_uid(b"Uid:\tx\n"), None);
        // a bounded read may end inside a character after the Uid line
        let mut cut = s.to_vec();
        cut.extend_from_slice("Name:\t\u{e9}".as_bytes());
        cut.pop();
        assert_eq!(parse_real_uid(&cut), Some(1000));
        assert_eq!(
            real_uid(std::process::id()),
            Some(crate::sys::process::uid())
        );
    }

    #[test]
    fn status_fields_are_read_whole_and_in_kib() {
        let me = std::process::id();
        let rss = status_kib(me, "VmRSS");
        assert!(rss > 0);
        assert!(status_kib(me, "VmHWM") >= rss);
        // a prefix of a field name is not that field
        assert_eq!(status_kib(me, "VmRS"), 0);
        // a process that is gone reads as 0 (pid_max is at most 2^22)
        assert_eq!(status_kib(1 << 23, "VmRSS"), 0);
    }
}
