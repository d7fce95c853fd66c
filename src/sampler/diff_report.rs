//! The reports of `pidmap diff`: a table for people, JSON and Markdown for
//! CI systems (the Markdown fits a pull-request comment), and the
//! differential flame graph (inferno's differential mode: the shape of
//! one side, each frame red where it grew and blue where it shrank, the
//! stronger the larger the change).

use crate::sampler::diff::{Measure, Presence, Report, Row, Scale};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;

/// What the reports say about the test.
pub const TEST_NAME: &str = "Welch's t-test";

/// The rows a report shows: every changed one, then the largest other
/// changes, `top` rows in all (never fewer than the changed ones).
pub fn shown(r: &Report, top: usize) -> impl Iterator<Item = &Row> {
    let changed = r.changed();
    r.rows.iter().take(top.max(changed))
}

fn presence_note(row: &Row) -> &'static str {
    match row.presence {
        Presence::Both => "",
        Presence::BaseOnly => " (base only)",
        Presence::NewOnly => " (new only)",
    }
}

fn status(row: &Row) -> &'static str {
    if row.changed() {
        "CHANGED"
    } else if row.self_.beyond || row.total.beyond {
        "noise"
    } else {
        ""
    }
}

fn mean_samples(v: &[u64]) -> u64 {
    v.iter().sum::<u64>() / (v.len().max(1) as u64)
}

/// The line that says what was compared and how.
pub fn summary(r: &Report) -> String {
    let side = |n: &[u64], what: &str| {
        format!(
            "{} ({} mean)",
            crate::text::counted(
                n.len() as u64,
                &format!("{what} profile"),
                &format!("{what} profiles")
            ),
            crate::text::counted(mean_samples(n), "sample", "samples")
        )
    };
    let test = if r.significance() {
        format!("{TEST_NAME} across runs at alpha {}", r.alpha)
    } else {
        "no significance test (one profile a side)".to_string()
    };
    let of = match r.scale {
        Scale::Run => "% of each run's samples",
        Scale::Base => "% of the base runs' mean samples",
    };
    format!(
        "{} vs {}; {test}; threshold {} points; shares in {of}",
        side(&r.base_samples, "base"),
        side(&r.new_samples, "new"),
        r.threshold
    )
}

fn p_text(p: Option<f64>) -> String {
    match p {
        None => "-".into(),
        Some(0.0) => "0".into(),
        Some(p) if p < 0.001 => format!("{p:.1e}"),
        Some(p) => format!("{p:.3}"),
    }
}

fn ratio_text(m: &Measure) -> String {
    m.ratio().map_or("-".into(), |r| format!("{r:.2}x"))
}

/// The table on stdout.
pub fn text(r: &Report, top: usize) -> String {
    let mut out = format!("# {}\n", summary(r));
    out.push_str(&format!(
        "{:<7}  {:-^38}  {:-^38}\n",
        "", " self % ", " total % "
    ));
    let cols = |out: &mut String, a: [&str; 5]| {
        out.push_str(&format!(
            "{:>7} {:>7} {:>7} {:>6} {:>8}",
            a[0], a[1], a[2], a[3], a[4]
        ))
    };
    out.push_str(&format!("{:<7}  ", "status"));
    cols(&mut out, ["base", "new", "delta", "ratio", "p"]);
    out.push_str("  ");
    cols(&mut out, ["base", "new", "delta", "ratio", "p"]);
    out.push_str("  function\n");
    for row in shown(r, top) {
        out.push_str(&format!("{:<7}  ", status(row)));
        for (i, m) in [&row.self_, &row.total].into_iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            cols(
                &mut out,
                [
                    &format!("{:.2}", m.base * 100.0),
                    &format!("{:.2}", m.new * 100.0),
                    &format!("{:+.2}", m.delta_points()),
                    &ratio_text(m),
                    &p_text(m.p),
                ],
            );
        }
        out.push_str(&format!("  {}{}\n", row.function, presence_note(row)));
    }
    out
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

fn json_measure(m: &Measure) -> String {
    let runs = |v: &[f64]| v.iter().map(|x| json_num(*x)).collect::<Vec<_>>().join(",");
    format!(
        "{{\"base\":{},\"new\":{},\"delta_points\":{},\"ratio\":{},\"p\":{},\"beyond_threshold\":{},\"changed\":{},\"base_runs\":[{}],\"new_runs\":[{}]}}",
        json_num(m.base),
        json_num(m.new),
        json_num(m.delta_points()),
        m.ratio().map_or("null".into(), json_num),
        m.p.map_or("null".into(), json_num),
        m.beyond,
        m.changed,
        runs(&m.base_runs),
        runs(&m.new_runs)
    )
}

/// One JSON object: the settings, the sample counts per run, and the
/// rows shown (shares are in 0..1, changes in percentage points).
pub fn json(r: &Report, top: usize) -> String {
    let counts = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let rows: Vec<String> = shown(r, top)
        .map(|row| {
            format!(
                "{{\"function\":\"{}\",\"presence\":\"{}\",\"changed\":{},\"self\":{},\"total\":{}}}",
                crate::text::json_escape(&row.function),
                match row.presence {
                    Presence::Both => "both",
                    Presence::BaseOnly => "base_only",
                    Presence::NewOnly => "new_only",
                },
                row.changed(),
                json_measure(&row.self_),
                json_measure(&row.total)
            )
        })
        .collect();
    format!(
        "{{\"test\":\"{}\",\"scale\":\"{}\",\"significance\":{},\"alpha\":{},\"threshold_points\":{},\"base_samples\":[{}],\"new_samples\":[{}],\"changed\":{},\"functions\":[{}]}}\n",
        if r.significance() { "welch_t" } else { "none" },
        match r.scale {
            Scale::Run => "run",
            Scale::Base => "base",
        },
        r.significance(),
        json_num(r.alpha),
        json_num(r.threshold),
        counts(&r.base_samples),
        counts(&r.new_samples),
        r.changed(),
        rows.join(",")
    )
}

/// A function name as Markdown table code: no `|` or backtick breaks it.
fn md_code(s: &str) -> String {
    format!("`{}`", s.replace('`', "'").replace('|', "\\|"))
}

/// A Markdown report for a pull-request comment.
pub fn markdown(r: &Report, top: usize) -> String {
    let n = r.changed();
    let mut out = if n == 0 {
        "### pidmap diff: no function changed\n\n".to_string()
    } else {
        format!(
            "### pidmap diff: {} changed\n\n",
            crate::text::counted(n as u64, "function", "functions")
        )
    };
    out.push_str(&format!("{}.\n\n", summary(r)));
    out.push_str(
        "| | function | self base % | self new % | self Δ points | self p | \
         total base % | total new % | total Δ points | total ratio | total p |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in shown(r, top) {
        let (s, t) = (&row.self_, &row.total);
        out.push_str(&format!(
            "| {} | {}{} | {:.2} | {:.2} | {:+.2} | {} | {:.2} | {:.2} | {:+.2} | {} | {} |\n",
            if row.changed() {
                "**changed**"
            } else {
                status(row)
            },
            md_code(&row.function),
            presence_note(row),
            s.base * 100.0,
            s.new * 100.0,
            s.delta_points(),
            p_text(s.p),
            t.base * 100.0,
            t.new * 100.0,
            t.delta_points(),
            ratio_text(t),
            p_text(t.p),
        ));
    }
    out
}

/// The differential flame graph: NEW's shape (BASE's with `reverse`,
/// where stacks that vanished show), coloured by the change of each
/// frame: red grew in NEW, blue shrank. `base` and `new` are the mean
/// share of each folded stack; widths are in `scale` units.
pub fn svg(
    base: &HashMap<String, f64>,
    new: &HashMap<String, f64>,
    scale: f64,
    reverse: bool,
    w: &mut dyn Write,
) -> std::io::Result<()> {
    let keys: BTreeSet<&String> = base.keys().chain(new.keys()).collect();
    let count = |m: &HashMap<String, f64>, k: &String| {
        (m.get(k).copied().unwrap_or(0.0) * scale).round() as u64
    };
    let lines: Vec<String> = keys
        .into_iter()
        .map(|k| {
            let (b, n) = (count(base, k), count(new, k));
            // the first count is the one compared against, the second
            // gives the width
            if reverse {
                format!("{k} {n} {b}")
            } else {
                format!("{k} {b} {n}")
            }
        })
        .collect();
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = if reverse {
        "pidmap diff: BASE's shape (red grew in NEW, blue shrank)".into()
    } else {
        "pidmap diff: NEW's shape (red grew, blue shrank)".into()
    };
    opts.count_name = "samples (mean per run)".into();
    opts.negate_differentials = reverse;
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), w)
        .map_err(std::io::Error::other)
}
