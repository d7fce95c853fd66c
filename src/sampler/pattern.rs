//! The patterns of `--comm`, `--dso` and `--function`: a small subset of
//! regular expressions, enough to pick functions, processes and files,
//! with no crate and no exponential case.
//!
//! Syntax: a character matches itself; `.` any character; `[abc]`,
//! `[a-z]`, `[^...]` a class; `*`, `+`, `?` repeat the atom before them;
//! `^` at the start and `$` at the end anchor; `|` separates alternatives
//! (at the top level: there are no groups); `\` makes the next character
//! literal. A pattern matches when it matches anywhere in the text (as
//! `grep -E`), unless anchored. Matching keeps the set of positions each
//! step can reach, so it costs at most pattern length times text length
//! squared, whatever the input.

/// One atom.
#[derive(Clone, Debug, PartialEq)]
enum Atom {
    Char(char),
    Any,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Atom {
    fn matches(&self, c: char) -> bool {
        match self {
            Atom::Char(x) => *x == c,
            Atom::Any => true,
            Atom::Class { negated, ranges } => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Rep {
    One,
    ZeroOrOne,
    ZeroOrMore,
    OneOrMore,
}

#[derive(Clone, Debug, PartialEq)]
struct Alt {
    start: bool,
    end: bool,
    items: Vec<(Atom, Rep)>,
}

/// A compiled pattern.
#[derive(Clone, Debug, PartialEq)]
pub struct Pattern {
    source: String,
    alts: Vec<Alt>,
}

impl Pattern {
    /// Compiles `src`; the error says what is wrong and where.
    pub fn new(src: &str) -> Result<Pattern, String> {
        let chars: Vec<char> = src.chars().collect();
        let mut alts = Vec::new();
        for part in split_top(&chars) {
            alts.push(alt(part).map_err(|e| format!("pattern {src:?}: {e}"))?);
        }
        Ok(Pattern {
            source: src.to_string(),
            alts,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches somewhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        let t: Vec<char> = text.chars().collect();
        self.alts.iter().any(|a| alt_matches(a, &t))
    }
}

/// `--comm`, `--dso`, `--function`: a stack is kept when its comm matches
/// `comm`, one of its frames' files matches `dso` and one of its frames'
/// names matches `function` (each only when given).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filters {
    pub comm: Option<Pattern>,
    pub dso: Option<Pattern>,
    pub function: Option<Pattern>,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.comm.is_none() && self.dso.is_none() && self.function.is_none()
    }

    /// Whether a stack with this comm and these (name, file) frames is kept.
    pub fn keeps<'a>(
        &self,
        comm: Option<&str>,
        frames: impl Iterator<Item = (&'a str, Option<&'a str>)> + Clone,
    ) -> bool {
        if let Some(p) = &self.comm {
            if !comm.is_some_and(|c| p.is_match(c)) {
                return false;
            }
        }
        if let Some(p) = &self.dso {
            if !frames
                .clone()
                .any(|(_, f)| f.is_some_and(|f| p.is_match(f)))
            {
                return false;
            }
        }
        if let Some(p) = &self.function {
            if !frames.clone().any(|(n, _)| p.is_match(n)) {
                return false;
            }
        }
        true
    }
}

/// The alternatives: split at `|` not escaped and not in a class.
fn split_top(chars: &[char]) -> Vec<&[char]> {
    let (mut out, mut from, mut i, mut in_class) = (Vec::new(), 0, 0, false);
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '|' if !in_class => {
                out.push(&chars[from..i]);
                from = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&chars[from.min(chars.len())..]);
    out
}

fn alt(mut p: &[char]) -> Result<Alt, String> {
    let start = p.first() == Some(&'^');
    if start {
        p = &p[1..];
    }
    let end = p.last() == Some(&'$') && (p.len() < 2 || p[p.len() - 2] != '\\');
    if end {
        p = &p[..p.len() - 1];
    }
    let mut items: Vec<(Atom, Rep)> = Vec::new();
    let mut i = 0;
    while i < p.len() {
        let atom = match p[i] {
            '\\' => {
                i += 1;
                Atom::Char(*p.get(i).ok_or("a trailing \\ escapes nothing")?)
            }
            '.' => Atom::Any,
            '[' => {
                let (class, next) = class(p, i + 1)?;
                i = next;
                class
            }
            c @ ('*' | '+' | '?') => {
                let rep = match c {
                    '*' => Rep::ZeroOrMore,
                    '+' => Rep::OneOrMore,
                    _ => Rep::ZeroOrOne,
                };
                match items.last_mut() {
                    Some((_, r @ Rep::One)) => *r = rep,
                    _ => return Err(format!("{c} at {i} repeats nothing")),
                }
                i += 1;
                continue;
            }
            c @ ('(' | ')' | '{' | '}') => {
                return Err(format!(
                    "{c} at {i}: groups and counted repetitions are not supported \
                     (write \\{c} for the character)"
                ))
            }
            '^' | '$' => {
                return Err(format!(
                    "{} at {i}: anchors only at the start and end",
                    p[i]
                ))
            }
            c => Atom::Char(c),
        };
        items.push((atom, Rep::One));
        i += 1;
    }
    Ok(Alt { start, end, items })
}

/// A class starting after its `[`; returns it and the index of its `]`.
fn class(p: &[char], mut i: usize) -> Result<(Atom, usize), String> {
    let negated = p.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *p.get(i).ok_or("a [ is not closed")?;
        if c == ']' && !first {
            return Ok((Atom::Class { negated, ranges }, i));
        }
        first = false;
        let lo = if c == '\\' {
            i += 1;
            *p.get(i).ok_or("a trailing \\ escapes nothing")?
        } else {
            c
        };
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&c| c != ']') {
            let mut j = i + 2;
            let hi = if p[j] == '\\' {
                j += 1;
                *p.get(j).ok_or("a trailing \\ escapes nothing")?
            } else {
                p[j]
            };
            if hi < lo {
                return Err(format!("range {lo}-{hi} is reversed"));
            }
            ranges.push((lo, hi));
            i = j + 1;
        } else {
            ranges.push((lo, lo));
            i += 1;
        }
    }
}

fn alt_matches(a: &Alt, t: &[char]) -> bool {
    // reach[k]: the text positions where the items so far can end
    let mut reach = vec![false; t.len() + 1];
    if a.start {
        reach[0] = true;
    } else {
        reach.iter_mut().for_each(|r| *r = true);
    }
    for (atom, rep) in &a.items {
        let mut next = vec![false; t.len() + 1];
        for pos in 0..=t.len() {
            if !reach[pos] {
                continue;
            }
            if matches!(rep, Rep::ZeroOrOne | Rep::ZeroOrMore) {
                next[pos] = true;
            }
            let mut q = pos;
            while q < t.len() && atom.matches(t[q]) {
                q += 1;
                if next[q] && matches!(rep, Rep::ZeroOrMore | Rep::OneOrMore) {
                    // already reached from an earlier start: so is the rest
                    break;
                }
                next[q] = true;
                if matches!(rep, Rep::One | Rep::ZeroOrOne) {
                    break;
                }
            }
        }
        reach = next;
        if !reach.iter().any(|&r| r) {
            return false;
        }
    }
    if a.end {
        reach[t.len()]
    } else {
        reach.iter().any(|&r| r)
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    fn m(p: &str, t: &str) -> bool {
        Pattern::new(p).unwrap().is_match(t)
    }

    #[test]
    fn matches_as_grep_does() {
        assert!(m("hot", "w;hot_a"));
        assert!(m("hot_[ab]$", "hot_b"));
        assert!(!m("hot_[ab]$", "hot_c"));
        assert!(m("^hot_.*c", "hot_xxc"));
        assert!(!m("^hot", "a_hot"));
        assert!(m("libc\\.so", "libc.so.6"));
        assert!(!m("libc\\.so", "libcXso"));
        assert!(m("a+b", "caab"));
        assert!(!m("^a+b", "b"));
        assert!(m("^x?y$", "y") && m("^x?y$", "xy") && !m("^x?y$", "xxy"));
        assert!(m("foo|bar", "a bar") && !m("^foo|^bar", "a bar"));
        assert!(m("[^a-z]", "abc1") && !m("^[^a-z]+$", "abc1"));
        assert!(m("", "anything"));
        assert!(m("^$", ""));
        assert!(m("[|]", "a|b") && !m("[|]", "ab"));
        assert!(m("^.*$", "é ü"));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (p, why) in [
            ("*a", "repeats nothing"),
            ("a**", "repeats nothing"),
            ("(a)", "groups"),
            ("[abc", "not closed"),
            ("a\\", "escapes nothing"),
            ("[z-a]", "reversed"),
            ("a^b", "anchors"),
        ] {
            let e = Pattern::new(p).unwrap_err();
            assert!(e.contains(why), "{p}: {e}");
        }
    }

    #[test]
    fn random_patterns_never_panic() {
        let mut rng = crate::rng::Rng::new(7);
        let alphabet: Vec<char> = "ab.[]^$-|*+?\\(){}é".chars().collect();
        for _ in 0..20_000 {
            let p: String = (0..rng.below(12)).map(|_| rng.pick(&alphabet)).collect();
            let t: String = (0..rng.below(12)).map(|_| rng.pick(&alphabet)).collect();
            if let Ok(p) = Pattern::new(&p) {
                let _ = p.is_match(&t);
            }
        }
    }

    #[test]
    fn no_exponential_case() {
        let text = "a".repeat(3000);
        let start = std::time::Instant::now();
        assert!(!m("a*a*a*a*a*a*a*a*b", &text));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }
}
