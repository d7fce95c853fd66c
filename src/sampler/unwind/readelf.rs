//! The test oracle: `readelf --debug-dump=frames-interp` (binutils, an
//! independent DWARF reader) parsed, and what our row must be for each of
//! its rows.

use super::{Kind, Row};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// One row of readelf's interpreted table: LOC and its columns by name.
#[derive(Clone, Debug)]
pub struct ReadelfRow {
    pub loc: u64,
    pub cols: HashMap<String, String>,
}

#[derive(Debug)]
pub struct ReadelfFde {
    pub debug: bool,
    pub start: u64,
    pub end: u64,
    /// The CIE's augmentation string ("zR", "zRS" for a signal frame).
    pub augmentation: String,
    pub rows: Vec<ReadelfRow>,
}

pub fn readelf_fdes(path: &Path) -> Vec<ReadelfFde> {
    let out = Command::new("readelf")
        .arg("--debug-dump=frames-interp")
        .arg(path)
        .output()
        .expect("readelf (binutils) runs: scripts/setup test installs it");
    // readelf exits 1 on some files it dumps whole (libc): judge the output
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Contents of the"),
        "readelf {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut fdes = Vec::new();
    // (debug, offset) -> (augmentation, last row) of each CIE
    let mut cies: HashMap<(bool, String), (String, Option<ReadelfRow>)> = HashMap::new();
    let mut debug = false;
    let mut cur_cie: Option<(bool, String)> = None;
    let mut cur_fde: Option<ReadelfFde> = None;
    let mut columns: Vec<String> = Vec::new();
    let finish = |fde: Option<ReadelfFde>, fdes: &mut Vec<ReadelfFde>| {
        if let Some(f) = fde {
            fdes.push(f);
        }
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("Contents of the ") {
            finish(cur_fde.take(), &mut fdes);
            debug = line.contains(".debug_frame");
            cur_cie = None;
        } else if words.get(3) == Some(&"CIE") {
            finish(cur_fde.take(), &mut fdes);
            let aug = words.get(4).unwrap_or(&"").trim_matches('"').to_string();
            let key = (debug, words[0].to_string());
            cies.insert(key.clone(), (aug, None));
            cur_cie = Some(key);
        } else if words.get(3) == Some(&"FDE") {
            finish(cur_fde.take(), &mut fdes);
            cur_cie = None;
            let cie = words[4].trim_start_matches("cie=").to_string();
            let (lo, hi) = words[5].trim_start_matches("pc=").split_once("..").unwrap();
            let (aug, cie_row) = cies.get(&(debug, cie)).cloned().unwrap_or_default();
            let start = u64::from_str_radix(lo, 16).unwrap();
            // an FDE without instructions has no table: its CIE's row holds
            let rows = cie_row
                .map(|r| vec![ReadelfRow { loc: start, ..r }])
                .unwrap_or_default();
            cur_fde = Some(ReadelfFde {
                debug,
                start,
                end: u64::from_str_radix(hi, 16).unwrap(),
                augmentation: aug,
                rows,
            });
        } else if words.first() == Some(&"LOC") {
            columns = words[1..].iter().map(|s| s.to_string()).collect();
            if let Some(f) = cur_fde.as_mut() {
                f.rows.clear();
            }
        } else if let Some(loc) = words
            .first()
            .filter(|w| w.len() == 16)
            .and_then(|w| u64::from_str_radix(w, 16).ok())
        {
            let cols = columns
                .iter()
                .cloned()
                .zip(words[1..].iter().map(|s| s.to_string()))
                .collect();
            let row = ReadelfRow { loc, cols };
            if let Some(f) = cur_fde.as_mut() {
                f.rows.push(row);
            } else if let Some(key) = &cur_cie {
                cies.get_mut(key).unwrap().1 = Some(row);
            }
        }
    }
    finish(cur_fde.take(), &mut fdes);
    fdes
}

/// What our row must be for readelf's row: the exact row, or (CFA given
/// by an expression, which readelf only prints as "exp") the kinds allowed;
/// `None` for rows where a register is kept in another register: readelf
/// 2.40 prints those rows' columns shifted (libc's `clone3`: "ra u" where
/// the raw dump says RA is still at CFA-8), so they are not compared here
/// (`tests::stops_are_counted_by_kind_and_debug_frame_fills_in` checks that
/// rule on a file of its own).
pub fn expected(r: &ReadelfRow) -> Option<Result<Row, &'static [Kind]>> {
    let in_register = |v: &String| v.starts_with('r') || v.starts_with('(');
    if r.cols.iter().any(|(k, v)| k != "CFA" && in_register(v)) {
        return None;
    }
    Some(expected_row(r))
}

fn expected_row(r: &ReadelfRow) -> Result<Row, &'static [Kind]> {
    let col = |name: &str| r.cols.get(name).map(String::as_str).unwrap_or("u");
    if col("ra") == "u" {
        return Ok(Row::END);
    }
    let cfa = col("CFA");
    if cfa == "exp" {
        return Err(&[Kind::Plt, Kind::Signal, Kind::Stop]);
    }
    let kind = if let Some(n) = cfa.strip_prefix("rsp") {
        (Kind::Rsp, n)
    } else if let Some(n) = cfa.strip_prefix("rbp") {
        (Kind::Rbp, n)
    } else {
        return Ok(Row::STOP);
    };
    let Ok(off) = kind.1.trim_start_matches('+').parse::<i32>() else {
        return Ok(Row::STOP);
    };
    if col("ra") != "c-8" {
        return Ok(Row::STOP);
    }
    let rbp = match col("rbp") {
        "u" | "s" => None,
        other => match other.strip_prefix('c').and_then(|n| n.parse::<i16>().ok()) {
            Some(n) => Some(n),
            None => return Ok(Row::STOP),
        },
    };
    Ok(Row::regs(kind.0, off, rbp))
}
