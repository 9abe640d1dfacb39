//! Every vector path this CPU supports (AVX2 + FMA, AVX-512; NEON on AArch64), chosen explicitly, against the scalar
//! reference: the table forward bit for bit (nearest and linear, every variant, per-channel rows),
//! the backward to a few ulp (dX) and to f64 summation order (dθ), exact mode within float32
//! rounding of the integrator; inputs inside and outside [a, b], NaN, ±∞, lengths not a multiple
//! of the lane count, empty slices. Paths the CPU lacks are reported as skipped (stdout, and
//! `paths_checked_here` lists them).

use ditac::core::kernels::{
    table_backward_baseline, table_backward_on, table_forward_baseline,
    table_forward_channels_baseline, table_forward_channels_on, table_forward_on, Channels, Isa,
};
use ditac::core::rng::XorShift64;
use ditac::core::{basis, Activation, Attrs, BasisKind, Interpolation, Variant};
use proptest::prelude::*;

const THETA: [f32; 9] = [0.8, -0.5, 0.3, 1.1, -0.9, 0.4, 0.2, -0.7, 0.6];

fn inputs(n: usize, seed: u64) -> Vec<f32> {
    let mut s = XorShift64(seed | 1);
    let mut v: Vec<f32> = (0..n).map(|_| s.unit_f32() * 10.0 - 5.0).collect();
    let special = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.5,
        2.0,
        0.0,
        -0.0,
        1e30,
        -1e30,
        f32::MIN_POSITIVE,
        -0.500_000_06,
        2.000_000_2,
    ];
    for (i, &sp) in special.iter().enumerate() {
        if i * 7 < n {
            v[i * 7] = sp;
        }
    }
    v
}

fn acts(with_grad: bool) -> Vec<(String, Activation<f32>)> {
    let b = basis::build(10, true, BasisKind::Qr).unwrap();
    let mut out = Vec::new();
    for variant in [Variant::Ditac, Variant::Ge, Variant::Leaky] {
        for interp in [Interpolation::Nearest, Interpolation::Linear] {
            for lut in [2, 5, 2048] {
                let at = Attrs {
                    variant,
                    interpolation: interp,
                    lut_size: lut,
                    ..Default::default()
                };
                let a = Activation::<f32>::from_theta(&at, &b, &THETA, with_grad).unwrap();
                out.push((format!("{variant:?} {interp:?} n={lut}"), a));
            }
        }
    }
    out
}

/// Equal up to the SIMD erf's rounding (|ΔΦ| ≤ 3e-7): |Δy| ≤ 4e-7·(1 + |x| + |y|).
fn same_up_to_erf(a: &[f32], b: &[f32], what: &str, x: &[f32]) {
    for i in 0..a.len() {
        let tol = 4e-7 * (1.0 + x[i].abs() + a[i].abs());
        assert!(
            a[i].to_bits() == b[i].to_bits()
                || (a[i].is_nan() && b[i].is_nan())
                || (a[i] - b[i]).abs() <= tol,
            "{what}: x={} simd={} scalar={}",
            x[i],
            a[i],
            b[i]
        );
    }
}

fn same_bits(a: &[f32], b: &[f32], what: &str, x: &[f32]) {
    for i in 0..a.len() {
        assert!(
            a[i].to_bits() == b[i].to_bits() || (a[i].is_nan() && b[i].is_nan()),
            "{what}: x={} simd={} scalar={}",
            x[i],
            a[i],
            b[i]
        );
    }
}

/// The vector paths this CPU runs; the others are printed as skipped.
fn vector_paths() -> Vec<Isa> {
    let mut run = Vec::new();
    for isa in Isa::ALL.into_iter().filter(|&i| i != Isa::Scalar) {
        if isa.supported() {
            run.push(isa);
        } else {
            println!("skipped: {} (not supported by this CPU)", isa.name());
        }
    }
    run
}

#[test]
fn paths_checked_here() {
    let (run, skipped): (Vec<Isa>, Vec<Isa>) = Isa::ALL.into_iter().partition(|i| i.supported());
    println!(
        "kernel paths checked against the scalar reference: {:?}; skipped (CPU lacks them): {:?}; active: {}",
        run.iter().map(|i| i.name()).collect::<Vec<_>>(),
        skipped.iter().map(|i| i.name()).collect::<Vec<_>>(),
        Isa::active().name()
    );
    assert!(run.contains(&Isa::Scalar));
    // A path asked for above what the CPU has falls back to the best it has.
    for isa in Isa::ALL {
        assert!(isa.usable() <= isa && isa.usable().supported());
    }
    assert_eq!(Isa::parse("AVX512"), Ok(Isa::Avx512));
    let err = Isa::parse("sse9").unwrap_err();
    assert!(
        err.contains("DITAC_ISA") && err.contains("scalar, neon, avx2, avx512"),
        "{err}"
    );
}

#[test]
fn forward_matches_scalar() {
    for (name, act) in acts(false) {
        let (k, _) = act.table_kernel().unwrap();
        for len in [0usize, 1, 7, 8, 9, 15, 16, 17, 1000, 4099] {
            let x = inputs(len, len as u64 + 3);
            let (mut y2, mut y3) = (vec![0.0; len], vec![0.0; len]);
            table_forward_baseline(&k, &x, &mut y2);
            act.forward_reference(&x, &mut y3);
            same_bits(&y2, &y3, &name, &x);
            for isa in vector_paths() {
                let mut y1 = vec![0.0; len];
                table_forward_on(isa, &k, &x, &mut y1);
                // The lane erf is the scalar erf operation for operation: the same bits (and the
                // same bits as a lowered standard-ops graph).
                same_bits(&y1, &y2, &format!("{name} {}", isa.name()), &x);
            }
        }
    }
}

#[test]
fn channels_in_one_pass_equal_row_by_row() {
    let b = basis::build(10, true, BasisKind::Qr).unwrap();
    for interp in [Interpolation::Nearest, Interpolation::Linear] {
        let at = Attrs {
            interpolation: interp,
            lut_size: 64,
            ..Default::default()
        };
        let c = 5;
        let rows: Vec<Activation<f32>> = (0..c)
            .map(|r| {
                let th: Vec<f32> = THETA.iter().map(|t| t * (r as f32 - 2.0) * 0.7).collect();
                Activation::<f32>::from_theta(&at, &b, &th, false).unwrap()
            })
            .collect();
        let (mut xt, mut pairs) = (Vec::new(), Vec::new());
        for a in &rows {
            xt.extend_from_slice(a.table_kernel().unwrap().0.xt);
            pairs.extend_from_slice(a.table_kernel().unwrap().0.pairs);
        }
        let mut k = rows[0].table_kernel().unwrap().0;
        k.xt = &xt;
        k.pairs = &pairs;
        for inner in [1usize, 3, 8, 100] {
            for start in [0usize, 5, 13] {
                let len = 1237;
                let x = inputs(len, (inner * 31 + start) as u64);
                let ch = Channels { start, c, inner };
                let mut y2 = vec![0.0; len];
                table_forward_channels_baseline(&k, 64, ch, &x, &mut y2);
                for isa in vector_paths() {
                    let mut y1 = vec![0.0; len];
                    table_forward_channels_on(isa, &k, 64, ch, &x, &mut y1);
                    same_bits(&y1, &y2, &format!("channels {} vs scalar", isa.name()), &x);
                }
                let (mut y3, mut y4) = (vec![0.0; len], vec![0.0; len]);
                for j in 0..len {
                    let r = ((start + j) / inner) % c;
                    rows[r].forward_reference(&x[j..j + 1], &mut y3[j..j + 1]);
                    // The dispatched kernel row by row (a run of one element: its tail).
                    let mut ys = [0.0f32; 1];
                    table_forward_on(
                        Isa::active(),
                        &rows[r].table_kernel().unwrap().0,
                        &x[j..j + 1],
                        &mut ys,
                    );
                    y4[j] = ys[0];
                }
                same_bits(&y2, &y3, "channels scalar vs row by row", &x);
                same_bits(&y2, &y4, "channels scalar vs row by row dispatched", &x);
            }
        }
    }
}

fn close(a: f32, b: f32, tol: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

fn check_backward(act: &Activation<f32>, name: &str, x: &[f32], dy: &[f32]) {
    let (k, g) = act.table_kernel().unwrap();
    let g = g.unwrap();
    let n = k.xt.len();
    let len = x.len();
    let d = g.d;
    let (mut dx2, mut dx3) = (vec![0.0; len], vec![0.0; len]);
    let (mut t2, mut t3) = (vec![0.0; d], vec![0.0; d]);
    table_backward_baseline(&k, &g, n, Channels::single(), dy, x, &mut dx2, &mut t2);
    act.backward_reference(dy, x, &mut dx3, &mut t3);
    for isa in vector_paths() {
        let mut dx1 = vec![0.0; len];
        let mut t1 = vec![0.0; d];
        table_backward_on(isa, &k, &g, n, Channels::single(), dy, x, &mut dx1, &mut t1);
        let name = format!("{name} {}", isa.name());
        check_backward_path(&name, x, &dx1, &dx3, &t1, &t3, dy);
    }
    check_backward_path(&format!("{name} scalar"), x, &dx2, &dx3, &t2, &t3, dy);
    for i in 0..len {
        // The scalar kernel is the reference element for element; SIMD exp is within 2 ulp.
        assert!(
            dx2[i].to_bits() == dx3[i].to_bits() || (dx2[i].is_nan() && dx3[i].is_nan()),
            "{name}: dx scalar kernel vs reference at x={}: {} {}",
            x[i],
            dx2[i],
            dx3[i]
        );
    }
}

/// One path's dX (a few ulp: SIMD exp and Φ) and dθ (summation order) against the reference.
fn check_backward_path(
    name: &str,
    x: &[f32],
    dx: &[f32],
    dx_ref: &[f32],
    t: &[f64],
    t_ref: &[f64],
    dy: &[f32],
) {
    for i in 0..x.len() {
        assert!(
            close(dx[i], dx_ref[i], 1e-6),
            "{name}: dx vs reference at x={}: {} {}",
            x[i],
            dx[i],
            dx_ref[i]
        );
    }
    let scale: f64 = dy.iter().map(|v| v.abs() as f64).sum::<f64>() + 1.0;
    for (kk, (&a, &b)) in t.iter().zip(t_ref).enumerate() {
        assert!(
            (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * scale * 10.0,
            "{name}: dθ[{kk}] {a} vs reference {b}"
        );
    }
}

#[test]
fn backward_matches_reference() {
    for (name, act) in acts(true) {
        for len in [0usize, 1, 9, 17, 100, 4099, 20000] {
            // Finite inputs for dθ (a NaN in range would make every sum NaN, as the reference).
            let x: Vec<f32> = inputs(len, len as u64 + 11)
                .into_iter()
                .map(|v| {
                    if v.is_finite() {
                        v.clamp(-6.0, 6.0)
                    } else {
                        1.0
                    }
                })
                .collect();
            let dy = inputs(len, len as u64 + 99)
                .into_iter()
                .map(|v| {
                    if v.is_finite() {
                        v.clamp(-2.0, 2.0)
                    } else {
                        0.5
                    }
                })
                .collect::<Vec<_>>();
            check_backward(&act, &name, &x, &dy);
        }
    }
}

#[test]
fn backward_dx_with_non_finite_inputs() {
    for (name, act) in acts(true) {
        let x = inputs(37, 5);
        let dy = vec![1.0f32; 37];
        let (k, g) = act.table_kernel().unwrap();
        let g = g.unwrap();
        let n = k.xt.len();
        let mut dx3 = vec![0.0; 37];
        let mut t3 = vec![0.0; g.d];
        act.backward_reference(&dy, &x, &mut dx3, &mut t3);
        for isa in Isa::ALL.into_iter().filter(|i| i.supported()) {
            let mut dx1 = vec![0.0; 37];
            let mut t1 = vec![0.0; g.d];
            table_backward_on(
                isa,
                &k,
                &g,
                n,
                Channels::single(),
                &dy,
                &x,
                &mut dx1,
                &mut t1,
            );
            for i in 0..37 {
                assert!(
                    close(dx1[i], dx3[i], 1e-6),
                    "{name} {}: x={} {} {}",
                    isa.name(),
                    x[i],
                    dx1[i],
                    dx3[i]
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn forward_random(xs in prop::collection::vec(-8.0f32..8.0, 0..100), lin in any::<bool>()) {
        let b = basis::build(10, true, BasisKind::Qr).unwrap();
        let at = Attrs { interpolation: if lin { Interpolation::Linear } else { Interpolation::Nearest }, ..Default::default() };
        let act = Activation::<f32>::from_theta(&at, &b, &THETA, true).unwrap();
        let (k, _) = act.table_kernel().unwrap();
        let mut y2 = vec![0.0; xs.len()];
        act.forward_reference(&xs, &mut y2);
        for isa in Isa::ALL.into_iter().filter(|i| i.supported()) {
            let mut y1 = vec![0.0; xs.len()];
            table_forward_on(isa, &k, &xs, &mut y1);
            for i in 0..xs.len() {
                prop_assert!(y1[i].to_bits() == y2[i].to_bits() || (y1[i].is_nan() && y2[i].is_nan()));
            }
        }
        let dy = vec![1.0f32; xs.len()];
        check_backward(&act, "random", &xs, &dy);
    }
}

/// θ drawn from the initialisation prior (length scale 5, output variance `scale`).
fn prior_theta(tess: usize, scale: f64, seed: u64) -> Vec<f32> {
    let b = basis::build(tess, true, BasisKind::Qr).unwrap();
    let cov = ditac::core::prior::init_covariance(tess, &b, 5.0, scale);
    ditac::core::prior::sample_theta(&cov, b.cols, seed)
}

/// How many cells the trajectory from u crosses (the integrator's cells at time 0 and 1).
fn crossings(act_theta: &[f32], tess: usize, u: f32) -> usize {
    use ditac::core::cpa::Field;
    let b = basis::build(tess, true, BasisKind::Qr).unwrap();
    let f = Field::<f32>::new(tess, &b.to_f32(), b.cols, act_theta);
    let c0 = ((u * tess as f32).floor().max(0.0) as usize).min(tess - 1);
    f.trace(u).cell.abs_diff(c0)
}

/// A warp of the exact-mode tests.
struct WarpCase {
    name: String,
    tess: usize,
    theta: Vec<f32>,
    a: f32,
    b: f32,
}

/// Small and wide warps: the fixed θ scaled on [−0.5, 2], and θ from the prior on [−5, 5] up to
/// trajectories crossing most of the cells, with 10, 20 and 40 cells.
fn exact_warp_cases() -> Vec<WarpCase> {
    let mut cases: Vec<WarpCase> = [0.3f32, 1.0, 2.5]
        .into_iter()
        .map(|scale| WarpCase {
            name: format!("THETA·{scale}"),
            tess: 10,
            theta: THETA.iter().map(|t| t * scale).collect(),
            a: -0.5,
            b: 2.0,
        })
        .collect();
    for (tess, scale, seed) in [
        (10usize, 2.0, 1u64),
        (10, 6.0, 2),
        (10, 20.0, 3),
        (40, 2.0, 4),
        (40, 10.0, 5),
        (20, 4.0, 6),
    ] {
        cases.push(WarpCase {
            name: format!("prior tess {tess} × {scale}"),
            tess,
            theta: prior_theta(tess, scale, seed),
            a: -5.0,
            b: 5.0,
        });
    }
    cases
}

/// The warp alone in exact mode (leaky with slope 1: the identity outside [a, b]), in float32 and
/// in float64 (the closed form the float32 paths are measured against).
fn exact_warps(tess: usize, theta: &[f32], a: f32, b: f32) -> (Activation<f32>, Activation<f64>) {
    let bs = basis::build(tess, true, BasisKind::Qr).unwrap();
    let at = Attrs {
        variant: Variant::Leaky,
        alpha: 1.0,
        lut_size: 0,
        tess: tess as i64,
        a,
        b,
        ..Default::default()
    };
    (
        Activation::<f32>::from_theta(&at, &bs, theta, false).unwrap(),
        Activation::<f64>::from_theta(&at, &bs, theta, false).unwrap(),
    )
}

/// The warp alone (leaky with slope 1 is the identity outside) on every vector path against the
/// integrator, for small and wide warps (θ from the prior up to trajectories crossing most of the
/// cells), 10 and 40 cells: within float32 rounding of the closed form. Returns the worst
/// relative error per path (printed).
#[test]
fn exact_warp_within_float32_rounding() {
    for WarpCase {
        name,
        tess,
        theta: th,
        a,
        b: bnd,
    } in exact_warp_cases()
    {
        let (act, act64) = exact_warps(tess, &th, a, bnd);
        let n = 20_011;
        let x: Vec<f32> = (0..n)
            .map(|i| a - 0.3 + (bnd - a + 0.6) * i as f32 / n as f32)
            .collect();
        let most = (0..200)
            .map(|i| crossings(&th, tess, i as f32 / 200.0))
            .max()
            .unwrap();
        // The closed form in f64 (the same field, eps and steps) is the truth; the float32
        // integrator (the scalar reference) is itself off by its rounding, which grows with the
        // number of crossings (each rounds a hit time and moves by eps past the boundary).
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mut y64 = vec![0.0; n];
        act64.forward_reference(&x64, &mut y64);
        let scale = (bnd - a) as f64;
        let err = |y: &[f32]| -> Vec<f64> {
            y.iter()
                .zip(&y64)
                .map(|(&v, &t)| (v as f64 - t).abs() / scale.max(t.abs()))
                .collect()
        };
        let mut y2 = vec![0.0; n];
        act.forward_reference(&x, &mut y2);
        let ref_worst = err(&y2).into_iter().fold(0.0, f64::max);
        println!(
            "exact warp {name} (up to {most} crossings): float32 integrator vs f64 closed form: worst relative error {ref_worst:.2e}"
        );
        for isa in Isa::ALL.into_iter().filter(|i| i.supported()) {
            let mut y1 = vec![0.0; n];
            act.forward_on(isa, &x, &mut y1);
            let e1 = err(&y1);
            for i in 0..n {
                assert!(
                    e1[i] <= 2.0 * ref_worst + 4e-7,
                    "{name} {}: x={} {} vs f64 {} (float32 integrator {})",
                    isa.name(),
                    x[i],
                    y1[i],
                    y64[i],
                    y2[i]
                );
            }
            let worst = e1.iter().cloned().fold(0.0, f64::max);
            let vs32 = y1
                .iter()
                .zip(&y2)
                .map(|(&p, &q)| (p - q).abs() as f64 / scale.max(q.abs() as f64))
                .fold(0.0, f64::max);
            println!(
                "    {}: vs f64 {worst:.2e}, vs float32 integrator {vs32:.2e}",
                isa.name()
            );
        }
    }
}

/// The exact mode's fast path (the checked interpolation table): on the lanes it serves, within
/// a float32 ulp (2^-23, the table's check) of the closed form, plus the interpolation's own
/// rounding (1.3e-7), plus what any float32 evaluation inherits: u = (x − a)/(b − a) rounded
/// (≤ 2^-23) moves x̃ by its local slope dx̃/du — all relative to max(b − a, |x̃|), on every vector
/// path. The other lanes take the constant-cost path (`exact_warp_within_float32_rounding`).
/// Prints the share of inputs and intervals it serves and the worst error.
#[test]
fn exact_fast_path_within_a_float32_ulp() {
    use ditac::core::kernels::{FAST_NODES, FAST_TOL};
    for WarpCase {
        name,
        tess,
        theta: th,
        a,
        b: bnd,
    } in exact_warp_cases()
    {
        let (act, act64) = exact_warps(tess, &th, a, bnd);
        let fast = act
            .fast_table()
            .expect("a float32 exact warp has its table");
        let pairs = fast.pairs();
        assert_eq!(pairs.len(), 2 * FAST_NODES);
        let n = 50_021;
        let x: Vec<f32> = (0..n)
            .map(|i| a + (bnd - a) * i as f32 / (n - 1) as f32)
            .collect();
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mut y64 = vec![0.0; n];
        act64.forward_reference(&x64, &mut y64);
        // The kernels' interval of x, in their float32 operations.
        let (add_in, mul_in) = (-(a as f64) as f32, (1.0 / (bnd as f64 - a as f64)) as f32);
        // The interval serving x (None: left to the constant-cost path).
        let served = |xi: f32| {
            let p = (xi + add_in) * mul_in * (FAST_NODES - 1) as f32;
            let i = (p as i32).clamp(0, FAST_NODES as i32 - 2) as usize;
            pairs[2 * i + 1].is_finite().then_some(i)
        };
        let span = (bnd - a) as f64;
        for isa in Isa::ALL
            .into_iter()
            .filter(|i| *i > Isa::Scalar && i.supported())
        {
            let mut y = vec![0.0; n];
            act.forward_on(isa, &x, &mut y);
            let mut worst = 0f64;
            let mut count = 0;
            for (i, k) in (0..n).filter_map(|i| served(x[i]).map(|k| (i, k))) {
                let rel = span.max(y64[i].abs());
                let e = (y[i] as f64 - y64[i]).abs() / rel;
                // dx̃/du (original units) times u's rounding
                let slope = pairs[2 * k + 1].abs() as f64 * (FAST_NODES - 1) as f64;
                let bound = FAST_TOL + 1.3e-7 + slope * f32::EPSILON as f64 / rel;
                assert!(
                    e <= bound,
                    "{name} {}: x={} {} vs f64 {} (bound {bound:.2e})",
                    isa.name(),
                    x[i],
                    y[i],
                    y64[i]
                );
                worst = worst.max(e);
                count += 1;
            }
            println!(
                "exact fast path {name} {}: {count} of {n} inputs served, {} of {} intervals left to the constant-cost path, worst {worst:.2e}",
                isa.name(),
                fast.slow_intervals(),
                FAST_NODES - 1
            );
            assert!(
                count > n / 2,
                "{name}: the table serves only {count} of {n}"
            );
        }
    }
}

/// The fast path's table leaves every kink of T̂ to the constant-cost path: intervals holding a
/// cell boundary (where trajectories start) or whose images straddle one (where they end), and
/// the ends of [0, 1].
#[test]
fn exact_fast_table_leaves_kinks_to_the_constant_cost_path() {
    use ditac::core::cpa::Field;
    use ditac::core::kernels::{FastTable, FAST_NODES};
    let b = basis::build(10, true, BasisKind::Qr).unwrap();
    let mut field = Field::<f64>::new(10, &b.to_f32(), 9, &THETA);
    field.pin_zero_boundary();
    let t = FastTable::build(&field, -0.5, 2.0);
    let pairs = t.pairs();
    let node = |i: usize| i as f64 / (FAST_NODES - 1) as f64;
    let mut kinks = 0;
    for i in 0..FAST_NODES - 1 {
        let (g0, g1) = (node(i), node(i + 1));
        let (t0, t1) = (field.transform(g0), field.transform(g1));
        let holds =
            |lo: f64, hi: f64| (0..=10).any(|k| lo <= k as f64 / 10.0 && k as f64 / 10.0 <= hi);
        if holds(g0, g1) || holds(t0.min(t1), t0.max(t1)) {
            kinks += 1;
            assert!(
                pairs[2 * i + 1].is_nan(),
                "interval {i} [{g0}, {g1}] holds a kink"
            );
        }
        assert!(pairs[2 * i].is_finite());
    }
    assert!(kinks >= 18, "{kinks}");
    assert!(t.slow_intervals() >= kinks && t.slow_intervals() < FAST_NODES / 10);
    assert_eq!(pairs[2 * FAST_NODES - 1], 0.0);
}

/// Exact mode with its outer functions on every path: the reference to the erf's and the warp's
/// rounding, on inputs with NaN, ±∞ and lengths around the lane counts.
#[test]
fn exact_forward_matches_reference() {
    let b = basis::build(10, true, BasisKind::Qr).unwrap();
    for variant in [Variant::Ditac, Variant::Ge, Variant::Leaky] {
        let at = Attrs {
            variant,
            lut_size: 0,
            ..Default::default()
        };
        let act = Activation::<f32>::from_theta(&at, &b, &THETA, false).unwrap();
        for len in [0usize, 1, 7, 9, 15, 17, 33, 513, 1500] {
            let x = inputs(len, len as u64 + 5);
            let mut y2 = vec![0.0; len];
            act.forward_reference(&x, &mut y2);
            for isa in Isa::ALL.into_iter().filter(|i| i.supported()) {
                let mut y1 = vec![0.0; len];
                act.forward_on(isa, &x, &mut y1);
                same_up_to_erf(&y1, &y2, &format!("exact {variant:?} {}", isa.name()), &x);
            }
        }
    }
}

/// For `perf stat -e cycles:u`: runs one kernel ($DITAC_KERNEL: nearest, linear, grad,
/// grad_linear, exact) 100 times over 1M elements.
#[test]
#[ignore]
fn kernel_loop() {
    let which = std::env::var("DITAC_KERNEL").unwrap_or_else(|_| "nearest".into());
    let b = basis::build(10, true, BasisKind::Qr).unwrap();
    let at = Attrs {
        interpolation: if which.contains("linear") {
            Interpolation::Linear
        } else {
            Interpolation::Nearest
        },
        lut_size: if which == "exact" { 0 } else { 2048 },
        ..Default::default()
    };
    let act = Activation::<f32>::from_theta(&at, &b, &THETA, true).unwrap();
    let n = 1 << 20;
    let x = inputs(n, 77);
    let dy = vec![1.0f32; n];
    let mut y = vec![0.0f32; n];
    let mut dth = vec![0.0f64; 9];
    let reps = if which == "exact" { 5 } else { 100 };
    for _ in 0..reps {
        if which.starts_with("grad") {
            act.backward(&dy, &x, &mut y, &mut dth);
        } else {
            act.forward(&x, &mut y);
        }
    }
    println!("{}", y[12345] as f64 + dth[0]);
}

#[test]
#[ignore]
fn crossing_fraction() {
    use ditac::core::cpa::Field;
    let b = basis::build(10, true, BasisKind::Qr).unwrap();
    let f = Field::<f32>::new(10, &b.to_f32(), 9, &THETA);
    let mut cross = 0;
    let n = 10000;
    for i in 0..n {
        let u = i as f32 / n as f32;
        let tr = f.trace(u);
        let c0 = ((u * 10.0).floor() as usize).min(9);
        if tr.cell != c0 {
            cross += 1;
        }
    }
    println!("crossing fraction {}", cross as f64 / n as f64);
    println!("A = {:?}", f.coefficients());
}
