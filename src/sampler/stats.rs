//! The significance test of `pidmap diff` across repeated runs: Welch's
//! unequal-variance t-test on the per-run shares of one function.
//!
//! Why Welch's t: a function's share in one run is a mean over thousands
//! of samples, so across runs it is close to normally distributed (the
//! central limit theorem), and the t-test uses that; the two builds may
//! differ in spread, which Welch's form allows. The alternatives fit
//! worse at the run counts labs use: with 5 runs per side the smallest
//! two-sided p-value Mann-Whitney U can give is 2/252 = 0.0079, so at
//! `--alpha 0.01` it could flag only changes where every run of one side
//! beats every run of the other, and a bootstrap of 5 values resamples
//! too few distinct sets to estimate a tail at 1 %.
//!
//! The t distribution's tail is the regularized incomplete beta function,
//! evaluated by its continued fraction (Lentz's method); `ln Γ` by the
//! Lanczos approximation. Both are accurate to about 1e-10 here, far
//! below what a significance level needs.

/// Mean and unbiased (n - 1) variance; `None` for fewer than 2 values.
pub fn mean_var(xs: &[f64]) -> Option<(f64, f64)> {
    if xs.len() < 2 {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    Some((mean, var))
}

/// The mean (0 for no values).
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// Welch's t-test of two samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Welch {
    pub t: f64,
    /// Welch-Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// Differences of means below this (in share, 0..1) are equal: shares
/// are ratios of counts, and the float sums of identical runs may differ
/// in the last bits.
const EQUAL: f64 = 1e-12;

/// Welch's t-test of `b` against `a`; `None` unless both have 2 values or
/// more. Two sets without spread are certainly equal (p = 1) when their
/// means are, and certainly different (p = 0) when not.
pub fn welch(a: &[f64], b: &[f64]) -> Option<Welch> {
    let (ma, va) = mean_var(a)?;
    let (mb, vb) = mean_var(b)?;
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (sa, sb) = (va / na, vb / nb);
    let se2 = sa + sb;
    let d = mb - ma;
    if se2 <= 0.0 || !se2.is_finite() {
        let same = d.abs() <= EQUAL;
        return Some(Welch {
            t: if same { 0.0 } else { f64::INFINITY.copysign(d) },
            df: na + nb - 2.0,
            p: if same { 1.0 } else { 0.0 },
        });
    }
    let t = d / se2.sqrt();
    let df = se2 * se2 / (sa * sa / (na - 1.0) + sb * sb / (nb - 1.0));
    Some(Welch {
        t,
        df,
        p: t_two_sided(t, df),
    })
}

/// P(|T| >= |t|) for Student's t with `df` degrees of freedom.
pub fn t_two_sided(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return 0.0;
    }
    let x = df / (df + t * t);
    inc_beta(df / 2.0, 0.5, x).clamp(0.0, 1.0)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // reflection
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularized incomplete beta function I_x(a, b).
fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // the continued fraction converges fast for x < (a + 1) / (a + b + 2)
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// The continued fraction of the incomplete beta function (modified
/// Lentz's method).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let away_from_zero = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / away_from_zero(1.0 - qab * x / qap);
    let mut h = d;
    // one term of the fraction: its factor on h
    let mut term = |aa: f64| {
        d = 1.0 / away_from_zero(1.0 + aa * d);
        c = away_from_zero(1.0 + aa / c);
        d * c
    };
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        h *= term(m * (b - m) * x / ((qam + m2) * (a + m2)));
        let del = term(-(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)));
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} is not within {tol} of {b}");
    }

    #[test]
    fn t_tails_match_the_tables() {
        // two-sided critical values of Student's t
        close(t_two_sided(2.228, 10.0), 0.05, 1e-4);
        close(t_two_sided(3.169, 10.0), 0.01, 1e-4);
        close(t_two_sided(12.706, 1.0), 0.05, 1e-4);
        close(t_two_sided(2.0, 10.0), 0.073_388, 1e-5);
        close(t_two_sided(-2.0, 10.0), 0.073_388, 1e-5);
        close(t_two_sided(1.96, 1e6), 0.05, 1e-4);
        close(t_two_sided(0.0, 4.0), 1.0, 1e-12);
        close(ln_gamma(5.0), 24f64.ln(), 1e-12);
        close(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln(), 1e-12);
    }

    #[test]
    fn welch_matches_a_published_example() {
        // Welch (1947)-style example used in textbooks and on Wikipedia:
        // t = -2.46, df = 24.9, p = 0.021
        let a = [
            27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
            21.4,
        ];
        let b = [
            27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
            24.4,
        ];
        let w = welch(&a, &b).unwrap();
        close(w.t, 2.46, 0.01); // b against a: b is larger
        close(w.df, 24.9, 0.1);
        close(w.p, 0.021, 0.001);
        // the other direction: the same p, the opposite sign
        let r = welch(&b, &a).unwrap();
        close(r.t, -w.t, 1e-12);
        close(r.p, w.p, 1e-12);
    }

    #[test]
    fn identical_runs_are_never_significant() {
        let a = [0.37, 0.36, 0.38, 0.37, 0.35];
        let w = welch(&a, &a).unwrap();
        assert_eq!(w.t, 0.0);
        close(w.p, 1.0, 1e-12);
        // no spread at all
        let c = [0.25; 5];
        assert_eq!(welch(&c, &c).unwrap().p, 1.0);
    }

    #[test]
    fn a_real_change_is_significant_both_ways() {
        let base = [0.370, 0.372, 0.368, 0.371, 0.369];
        let new = [0.400, 0.402, 0.398, 0.401, 0.399];
        let up = welch(&base, &new).unwrap();
        assert!(up.t > 0.0 && up.p < 1e-6, "{up:?}");
        let down = welch(&new, &base).unwrap();
        assert!(down.t < 0.0 && down.p < 1e-6, "{down:?}");
        // a change within the noise is not
        let noisy = [0.36, 0.39, 0.35, 0.40, 0.37];
        let p = welch(&base, &noisy).unwrap().p;
        assert!(p > 0.5, "{p}");
        // different without spread
        assert_eq!(welch(&[0.1, 0.1], &[0.2, 0.2]).unwrap().p, 0.0);
    }

    #[test]
    fn one_run_a_side_has_no_test() {
        assert_eq!(welch(&[0.5], &[0.5, 0.6]), None);
        assert_eq!(welch(&[0.5, 0.4], &[0.6]), None);
        assert_eq!(mean_var(&[]), None);
        assert_eq!(mean(&[]), 0.0);
    }
}
