//! Tests of `diff`: name matching, shares, the comparison across runs.

use super::*;

fn st(comm: &str, frames: &[&str], count: u64) -> Stack {
    Stack {
        comm: Some(comm.into()),
        frames: frames.iter().map(|f| folded_frame(f)).collect(),
        count,
    }
}

/// One run of a workload whose three callers share one helper: the
/// helper is the leaf of every sample.
fn run(a: u64, b: u64, c: u64) -> Vec<Stack> {
    vec![
        st("w", &["main", "hot_a", "helper"], a),
        st("w", &["main", "hot_b", "helper"], b),
        st("w", &["main", "hot_c", "helper"], c),
    ]
}

fn shares(runs: &[Vec<Stack>]) -> Vec<RunShares> {
    runs.iter().map(|r| run_shares(r)).collect()
}

fn row<'a>(r: &'a Report, f: &str) -> &'a Row {
    r.rows.iter().find(|x| x.function == f).unwrap()
}

#[test]
fn names_are_matched_without_addresses() {
    assert_eq!(match_name("main+0x1a"), ("main".into(), true));
    assert_eq!(match_name("libc.so.6+0x2a3f0"), ("libc.so.6".into(), true));
    assert_eq!(match_name("0x7f00deadbeef"), ("[unknown]".into(), false));
    assert_eq!(match_name("operator+"), ("operator+".into(), false));
    assert_eq!(match_name("a+0xzz"), ("a+0xzz".into(), false));
    let f = folded_frame("libx.so+0x10");
    assert_eq!(
        (f.name.as_str(), f.file.as_deref()),
        ("libx.so", Some("libx.so"))
    );
    let k = folded_frame("schedule_[k]");
    assert_eq!(k.file.as_deref(), Some("[kernel]"));
    // two builds: the unsymbolized frame moved, it is still one function
    let a = run_shares(&[st("w", &["main", "libx.so+0x10"], 10)]);
    let b = run_shares(&[st("w", &["main", "libx.so+0x40"], 10)]);
    assert_eq!(a, b);
}

#[test]
fn self_and_total_shares() {
    let r = run_shares(&run(37, 37, 26));
    assert_eq!(r.samples, 100);
    assert!((r.self_["helper"] - 1.0).abs() < 1e-12);
    assert!(!r.self_.contains_key("hot_a"));
    assert!((r.total["hot_a"] - 0.37).abs() < 1e-12);
    assert!((r.total["main"] - 1.0).abs() < 1e-12);
    // the comm is not a function
    assert!(!r.total.contains_key("w"));
    // recursion counts once per stack
    let rec = run_shares(&[st("w", &["f", "f", "f"], 4), st("w", &["g"], 4)]);
    assert!((rec.total["f"] - 0.5).abs() < 1e-12);
}

#[test]
fn identical_runs_are_never_flagged() {
    let runs: Vec<Vec<Stack>> = (0..5).map(|i| run(370 + i, 370 - i, 260)).collect();
    let s = shares(&runs);
    let r = compare(&s, &s, 0.0, 0.01);
    assert!(r.significance());
    assert_eq!(r.changed(), 0, "{:#?}", r.rows);
    for row in &r.rows {
        assert_eq!(row.total.p, Some(1.0), "{}", row.function);
    }
}

#[test]
fn a_slower_caller_is_flagged_by_its_total_share() {
    // hot_a 15 % slower: the helper stays 100 % of self, so only the
    // inclusive (total) share shows it
    let base: Vec<Vec<Stack>> = (0..5).map(|i| run(370 + i, 370 - i, 260)).collect();
    let new: Vec<Vec<Stack>> = (0..5).map(|i| run(425 + i, 370 - i, 260)).collect();
    let r = compare(&shares(&base), &shares(&new), 1.0, 0.01);
    assert_eq!(r.changed(), 3, "{:#?}", r.rows);
    let a = row(&r, "hot_a");
    assert!(a.changed() && a.total.changed && !a.self_.changed);
    assert!(a.total.delta_points() > 3.0, "{a:?}");
    assert!(a.total.ratio().unwrap() > 1.05);
    assert!(a.total.p.unwrap() < 0.01);
    // b and c lost share as a grew: they changed too (shares sum to 1)
    assert!(row(&r, "hot_b").total.delta_points() < 0.0);
    assert!(!row(&r, "helper").changed());
    assert!(!row(&r, "main").changed());
    // changed rows come first, the largest first
    assert_eq!(r.rows[0].function, "hot_a");
    // the other direction: the same functions, the opposite sign
    let back = compare(&shares(&new), &shares(&base), 1.0, 0.01);
    assert!(row(&back, "hot_a").changed());
    assert!(row(&back, "hot_a").total.delta_points() < -3.0);
}

#[test]
fn noise_beyond_the_threshold_is_not_a_change() {
    // runs that scatter by several points around the same mean
    let base: Vec<Vec<Stack>> = [30, 40, 35, 45, 33]
        .iter()
        .map(|&a| run(a, 100 - a, 0))
        .collect();
    let new: Vec<Vec<Stack>> = [42, 31, 44, 36, 39]
        .iter()
        .map(|&a| run(a, 100 - a, 0))
        .collect();
    let r = compare(&shares(&base), &shares(&new), 0.5, 0.01);
    let a = row(&r, "hot_a");
    assert!(a.total.beyond && !a.total.changed, "{a:?}");
    assert_eq!(r.changed(), 0);
    // one run a side: the same data, no test, the threshold decides
    let single = compare(&shares(&base[..1]), &shares(&new[..1]), 0.5, 0.01);
    assert!(!single.significance());
    let a = row(&single, "hot_a");
    assert!(a.total.p.is_none() && a.changed());
}

#[test]
fn functions_on_one_side_only_are_marked() {
    let base = vec![run(50, 50, 0), run(50, 50, 0)];
    let mut new = vec![run(50, 40, 0), run(50, 40, 0)];
    for r in &mut new {
        r.push(st("w", &["main", "fresh"], 10));
    }
    let r = compare(&shares(&base), &shares(&new), 1.0, 0.01);
    let f = row(&r, "fresh");
    assert_eq!(f.presence, Presence::NewOnly);
    // a new function is the first of the changed ones
    assert_eq!(r.rows[0].function, "fresh");
    assert!(f.changed());
    assert!(f.total.ratio().is_none());
    let back = compare(&shares(&new), &shares(&base), 1.0, 0.01);
    assert_eq!(row(&back, "fresh").presence, Presence::BaseOnly);
    assert_eq!(row(&back, "hot_a").presence, Presence::Both);
}

#[test]
fn filters_keep_matching_stacks() {
    let mut stacks = run(10, 20, 30);
    stacks.push(st("other", &["main", "libz.so+0x10"], 5));
    let f = Filters {
        function: Some(crate::sampler::pattern::Pattern::new("hot_[ab]$").unwrap()),
        ..Filters::default()
    };
    let kept = filter(stacks.clone(), &f);
    assert_eq!(kept.iter().map(|s| s.count).sum::<u64>(), 30);
    let f = Filters {
        comm: Some(crate::sampler::pattern::Pattern::new("^other$").unwrap()),
        ..Filters::default()
    };
    assert_eq!(filter(stacks.clone(), &f).len(), 1);
    let f = Filters {
        dso: Some(crate::sampler::pattern::Pattern::new("libz").unwrap()),
        ..Filters::default()
    };
    assert_eq!(filter(stacks, &f)[0].comm.as_deref(), Some("other"));
}

#[test]
fn mean_stacks_average_the_runs_shares() {
    let m = mean_stacks(&[run(50, 50, 0), run(100, 300, 0)], true);
    assert!((m["w;main;hot_a;helper"] - (0.5 + 0.25) / 2.0).abs() < 1e-12);
    let m = mean_stacks(&[run(50, 50, 0)], false);
    assert!((m["main;hot_a;helper"] - 0.5).abs() < 1e-12);
    assert_eq!(
        comms(&[run(1, 1, 1)]).into_iter().collect::<Vec<_>>(),
        ["w"]
    );
}

#[test]
fn a_significant_change_within_the_threshold_is_not_reported() {
    // every run moves hot_a by the same 0.3 points: certain, but small
    let base: Vec<Vec<Stack>> = (0..5).map(|_| run(3700, 3700, 2600)).collect();
    let new: Vec<Vec<Stack>> = (0..5).map(|_| run(3730, 3670, 2600)).collect();
    let r = compare(&shares(&base), &shares(&new), 1.0, 0.01);
    let a = row(&r, "hot_a");
    assert!(a.total.p.unwrap() < 0.01 && !a.total.beyond, "{a:?}");
    assert_eq!(r.changed(), 0);
    // with a threshold below it, it is
    assert!(compare(&shares(&base), &shares(&new), 0.1, 0.01).changed() > 0);
}

/// One simulated run of the workload, a fixed amount of work:
/// hot_a, hot_b, hot_c get samples in proportion to their `work` (about
/// `samples` in all for the base build's work of 99), with Poisson noise
/// (normal approximation).
fn simulated_run(rng: &mut crate::rng::Rng, work: [f64; 3], samples: f64) -> RunShares {
    let mut normal = || {
        // Box-Muller
        let u = |r: &mut crate::rng::Rng| (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let (a, b) = (u(rng).max(1e-300), u(rng));
        (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
    };
    let counts: Vec<f64> = work
        .iter()
        .map(|w| {
            let mean = w / 99.0 * samples;
            mean + normal() * mean.sqrt()
        })
        .collect();
    let total: f64 = counts.iter().sum();
    let mut r = RunShares {
        samples: total.round() as u64,
        ..RunShares::default()
    };
    for (name, c) in ["hot_a", "hot_b", "hot_c"].into_iter().zip(counts) {
        r.self_.insert(name.into(), c / total);
        r.total.insert(name.into(), c / total);
    }
    r
}

/// Over many simulated labs of 5 runs a side (50 000 samples a run):
/// identical builds are flagged at no more than alpha's rate, and hot_a
/// made 3 % slower is found nearly always while nothing else is (shares
/// of the base's samples: the others' shares of their own runs do shrink).
#[test]
fn false_positives_stay_within_alpha_and_a_3_percent_change_is_found() {
    let mut rng = crate::rng::Rng::new(14);
    let (trials, samples) = (2000, 50_000.0);
    let base_work = [37.0, 37.0, 25.0];
    let slow_work = [37.0 * 1.03, 37.0, 25.0];
    let set = |rng: &mut crate::rng::Rng, w| {
        (0..5)
            .map(|_| simulated_run(rng, w, samples))
            .collect::<Vec<_>>()
    };
    // the test alone (threshold 0): a function flagged at rate ~alpha
    for scale in [Scale::Run, Scale::Base] {
        let mut flagged = 0;
        for _ in 0..trials {
            let (a, b) = (set(&mut rng, base_work), set(&mut rng, base_work));
            flagged +=
                usize::from(row(&compare_scaled(&a, &b, 0.0, 0.01, scale), "hot_a").changed());
        }
        let rate = flagged as f64 / trials as f64;
        assert!(
            rate <= 0.02,
            "{scale:?}: identical builds: hot_a flagged in {rate} of the labs"
        );
    }
    // with the threshold the lab uses: a 3 % slower hot_a moves it about
    // 1.1 points of the base's samples, the others not at all
    let (mut found, mut others, mut false_pos) = (0, 0, 0);
    for _ in 0..trials / 4 {
        let base = set(&mut rng, base_work);
        let r = compare_scaled(&base, &set(&mut rng, slow_work), 0.5, 0.01, Scale::Base);
        found += usize::from(row(&r, "hot_a").changed());
        others += r
            .rows
            .iter()
            .filter(|x| x.function != "hot_a" && x.changed())
            .count();
        false_pos +=
            compare_scaled(&base, &set(&mut rng, base_work), 0.5, 0.01, Scale::Base).changed();
    }
    let n = (trials / 4) as f64;
    assert!(
        found as f64 / n >= 0.95,
        "a 3 % slower hot_a found in {found} of {n}"
    );
    assert!(
        others as f64 / n <= 0.01,
        "bystanders flagged {others} times in {n}"
    );
    assert!(
        false_pos as f64 / n <= 0.01,
        "identical builds flagged {false_pos} times in {n}"
    );
    // of each run's own samples, the bystanders' shares shrink: they are
    // flagged too, about as often as their 0.4-point move crosses 0.3
    let base = set(&mut rng, base_work);
    let r = compare_scaled(&base, &set(&mut rng, slow_work), 0.3, 0.01, Scale::Run);
    assert!(
        row(&r, "hot_b").self_.delta_points() < -0.2,
        "{:?}",
        row(&r, "hot_b")
    );
}

#[test]
fn shares_of_the_base_samples_keep_an_unchanged_function_unchanged() {
    // fixed work: hot_a's 370 samples became 425, the others stayed
    let base: Vec<RunShares> = (0..5)
        .map(|i| run_shares(&run(370 + i, 370 - i, 260)))
        .collect();
    let new: Vec<RunShares> = (0..5)
        .map(|i| run_shares(&run(425 + i, 370 - i, 260)))
        .collect();
    let r = compare_scaled(&base, &new, 1.0, 0.01, Scale::Base);
    // hot_a, and the helper and main, which did its extra work with it
    let changed: Vec<&str> = r
        .rows
        .iter()
        .filter(|x| x.changed())
        .map(|x| x.function.as_str())
        .collect();
    assert_eq!(changed.len(), 3, "{changed:?}");
    assert!(["hot_a", "helper", "main"]
        .iter()
        .all(|f| changed.contains(f)));
    let a = row(&r, "hot_a");
    assert!(
        (a.total.delta_points() - 55.0 / 1000.0 * 100.0).abs() < 1e-9,
        "{a:?}"
    );
    assert!(row(&r, "hot_b").total.delta_points().abs() < 1e-9);
    assert_eq!(r.scale, Scale::Base);
    // the same profiles as shares of each run: the three callers moved
    let r = compare(&base, &new, 1.0, 0.01);
    assert!(["hot_a", "hot_b", "hot_c"]
        .iter()
        .all(|f| row(&r, f).changed()));
}
