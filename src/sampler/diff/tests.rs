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
    let m = mean_stacks(&[run(50, 50, 0), run(100, 300, 0)]);
    assert!((m["w;main;hot_a;helper"] - (0.5 + 0.25) / 2.0).abs() < 1e-12);
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
