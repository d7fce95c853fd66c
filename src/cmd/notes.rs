//! What `pidmap profile` says when a profile is too small to read: why
//! (nothing ran on a CPU while it sampled) and what to do instead.

/// Fewer samples than this and the profile says little.
pub const FEW_SAMPLES: u64 = 20;

/// The note for a profile of `samples` samples taken at `freq` Hz, of a
/// command (`-- CMD`) or not, after filters or not; `None` when the
/// profile is large enough.
pub fn few_samples(samples: u64, freq: u64, command: bool, filtered: bool) -> Option<String> {
    if samples >= FEW_SAMPLES {
        return None;
    }
    let how_many = match samples {
        0 => "no samples".to_string(),
        n => format!("only {}", crate::text::counted(n, "sample", "samples")),
    };
    let why = if filtered {
        "the filters (--comm, --dso, --function) kept almost nothing: check their patterns \
         against the unfiltered profile"
            .to_string()
    } else if command {
        format!(
            "the command was on a CPU for less than {:.0} ms in all: pidmap samples a \
             process {freq} times a second only while it runs, not while it sleeps or waits. \
             Give it more work (or a longer run), or raise -F (up to 9999)",
            FEW_SAMPLES as f64 * 1000.0 / freq.max(1) as f64
        )
    } else {
        "almost nothing ran on a CPU while pidmap watched (an idle host gives few \
         samples: pidmap samples what runs, not what sleeps). Profile a workload \
         instead: `pidmap profile -- CMD ARGS` (it profiles CMD and its children until \
         it exits), or `make run` for the bundled demo"
            .to_string()
    };
    Some(format!("pidmap: {how_many}: {why}."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_profiles_say_why_and_what_to_do() {
        assert_eq!(few_samples(FEW_SAMPLES, 99, false, false), None);
        let idle = few_samples(0, 99, false, false).unwrap();
        assert!(
            idle.starts_with("pidmap: no samples: almost nothing ran"),
            "{idle}"
        );
        assert!(idle.contains("pidmap profile -- CMD ARGS"), "{idle}");
        let cmd = few_samples(3, 99, true, false).unwrap();
        assert!(
            cmd.starts_with("pidmap: only 3 samples: the command"),
            "{cmd}"
        );
        assert!(cmd.contains("202 ms") && cmd.contains("-F"), "{cmd}");
        let one = few_samples(1, 99, false, true).unwrap();
        assert!(
            one.starts_with("pidmap: only 1 sample: the filters"),
            "{one}"
        );
    }
}
