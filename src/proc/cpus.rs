//! The kernel's CPU lists (`/sys/devices/system/cpu/online`).

use std::io;

// ---------------------------------------------------------------------------
// CPU list
// ---------------------------------------------------------------------------

/// Upper bound on the number of CPUs a list may expand to (kernel NR_CPUS <= 8192).
const MAX_CPU_ENTRIES: u64 = 1 << 16;

/// CPUs listed in `/sys/devices/system/cpu/online`, sorted and deduplicated.
pub fn online_cpus() -> io::Result<Vec<u32>> {
    const PATH: &str = "/sys/devices/system/cpu/online";
    let s = std::fs::read_to_string(PATH)
        .map_err(|e| io::Error::new(e.kind(), format!("read {PATH}: {e}")))?;
    parse_cpu_list(&s)
        .map_err(|m| io::Error::new(io::ErrorKind::InvalidData, format!("parse {PATH}: {m}")))
}

/// Parses a kernel cpu list such as `"0-3,5,7-8\n"` into sorted, unique ids.
pub fn parse_cpu_list(s: &str) -> Result<Vec<u32>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty cpu list".to_string());
    }
    let mut cpus = Vec::new();
    for part in s.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (parse_cpu_id(a, part)?, parse_cpu_id(b, part)?),
            None => {
                let c = parse_cpu_id(part, part)?;
                (c, c)
            }
        };
        if lo > hi {
            return Err(format!("reversed range {part:?}"));
        }
        let count = u64::from(hi - lo) + 1;
        if cpus.len() as u64 + count > MAX_CPU_ENTRIES {
            return Err(format!("cpu list too large at {part:?}"));
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

fn parse_cpu_id(s: &str, part: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid cpu {s:?} in {part:?}"));
    }
    s.parse::<u32>()
        .map_err(|e| format!("invalid cpu {s:?} in {part:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_cpu_list_ok() {
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert_eq!(parse_cpu_list("0-3\n").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(
            parse_cpu_list("0-3,5,7-8").unwrap(),
            vec![0, 1, 2, 3, 5, 7, 8]
        );
        assert_eq!(parse_cpu_list("4,0-1,1").unwrap(), vec![0, 1, 4]);
    }

    #[test]
    fn parse_cpu_list_errors() {
        for bad in [
            "",
            "\n",
            "a",
            "3-1",
            "1-",
            "-1",
            ",",
            "0,,1",
            "+1",
            "0-1-2",
            "1 ,2",
            "99999999999",
            "0-4294967295",
        ] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn online_cpus_nonempty() {
        let cpus = online_cpus().unwrap();
        assert!(!cpus.is_empty());
    }
}
