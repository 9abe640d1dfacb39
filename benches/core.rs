//! Single-thread, f32 benchmarks of the math core: table build, exact forward (default and a wide
//! warp), table forward and backward, on every kernel path this CPU has (scalar, AVX2, AVX-512).
//! Goals: build (tess 10, 2048 nodes) < 0.2 ms; exact ≥ 20 M elements/s; table ≥ 1 G elements/s.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ditac::core::cpa::Field;
use ditac::core::kernels::{table_backward_on, table_forward_on, Channels, Isa};
use ditac::core::rng::XorShift64;
use ditac::core::table::Table;
use ditac::core::{basis, Activation, Attrs, BasisKind, Interpolation, Variant};
use std::hint::black_box;

const THETA: [f32; 9] = [0.8, -0.5, 0.3, 1.1, -0.9, 0.4, 0.2, -0.7, 0.6];

fn inputs(n: usize) -> Vec<f32> {
    // A deterministic spread over [-4, 4]: about 60% inside the default interval [-0.5, 2].
    let mut s = XorShift64(0x9E37_79B9_7F4A_7C15);
    (0..n).map(|_| s.unit_f32() * 8.0 - 4.0).collect()
}

/// The kernel paths this CPU runs (the others are named as skipped).
fn paths() -> Vec<Isa> {
    Isa::ALL
        .into_iter()
        .filter(|i| {
            let ok = i.supported();
            if !ok {
                eprintln!("skipped: {} (not supported by this CPU)", i.name());
            }
            ok
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let b = basis::build(10, true, BasisKind::Qr).unwrap();
    let bf = b.to_f32();

    let mut g = c.benchmark_group("table_build");
    g.bench_function("tess10_n2048", |bch| {
        bch.iter(|| {
            let f = Field::<f32>::new(10, &bf, 9, black_box(&THETA));
            black_box(Table::build(&f, 2048, false))
        })
    });
    g.bench_function("tess10_n2048_with_grad", |bch| {
        bch.iter(|| {
            let f = Field::<f32>::new(10, &bf, 9, black_box(&THETA));
            black_box(Table::build(&f, 2048, true))
        })
    });
    g.finish();

    let n = 1 << 20;
    let x = inputs(n);
    let mut y = vec![0.0f32; n];
    let mut g = c.benchmark_group("forward");
    g.throughput(Throughput::Elements(n as u64));
    // The scalar reference kernel beside every vector path this CPU has (AVX2, AVX-512; the
    // widest is what `forward` runs).
    for (name, lut, interp, variant) in [
        (
            "table_nearest",
            2048,
            Interpolation::Nearest,
            Variant::Ditac,
        ),
        ("table_linear", 2048, Interpolation::Linear, Variant::Ditac),
        (
            "table_nearest_leaky",
            2048,
            Interpolation::Nearest,
            Variant::Leaky,
        ),
    ] {
        let at = Attrs {
            lut_size: lut,
            interpolation: interp,
            variant,
            ..Default::default()
        };
        let act = Activation::<f32>::from_theta(&at, &b, &THETA, false).unwrap();
        let (k, _) = act.table_kernel().unwrap();
        for isa in paths() {
            g.bench_with_input(
                BenchmarkId::new(format!("{name}/{}", isa.name()), n),
                &x,
                |bch, x| bch.iter(|| table_forward_on(isa, &k, black_box(x), &mut y)),
            );
        }
    }
    // Exact mode: the bench's default warp, and a wide one (θ from the prior, [−5, 5], inputs
    // spread over it) whose trajectories cross several cells.
    let wide_theta = {
        let cov = ditac::core::prior::init_covariance(10, &b, 5.0, 2.0);
        ditac::core::prior::sample_theta(&cov, 9, 0x5EED)
    };
    let wide_x: Vec<f32> = x.iter().map(|v| v * 1.5).collect();
    let m = n / 16;
    g.throughput(Throughput::Elements(m as u64));
    for (name, theta, (a, bb), xs) in [
        ("exact", &THETA[..], (-0.5, 2.0), &x),
        ("exact_wide", &wide_theta[..], (-5.0, 5.0), &wide_x),
    ] {
        let at = Attrs {
            lut_size: 0,
            a,
            b: bb,
            ..Default::default()
        };
        let act = Activation::<f32>::from_theta(&at, &b, theta, false).unwrap();
        for isa in paths() {
            g.bench_with_input(
                BenchmarkId::new(format!("{name}/{}", isa.name()), m),
                &xs[..m],
                |bch, x| bch.iter(|| act.forward_on(isa, black_box(x), &mut y[..m])),
            );
        }
    }
    g.finish();

    let mut g = c.benchmark_group("backward");
    g.throughput(Throughput::Elements(n as u64));
    let dy = vec![1.0f32; n];
    let mut dx = vec![0.0f32; n];
    for (name, interp) in [
        ("table_nearest", Interpolation::Nearest),
        ("table_linear", Interpolation::Linear),
    ] {
        let at = Attrs {
            interpolation: interp,
            ..Default::default()
        };
        let act = Activation::<f32>::from_theta(&at, &b, &THETA, true).unwrap();
        let (k, gt) = act.table_kernel().unwrap();
        let gt = gt.unwrap();
        g.bench_function(BenchmarkId::new(format!("{name}/reference"), n), |bch| {
            bch.iter(|| {
                let mut dth = [0.0f64; 9];
                act.backward_reference(&dy, black_box(&x), &mut dx, &mut dth);
                black_box(dth)
            })
        });
        for isa in paths() {
            g.bench_function(
                BenchmarkId::new(format!("{name}/{}", isa.name()), n),
                |bch| {
                    bch.iter(|| {
                        let mut dth = [0.0f64; 9];
                        table_backward_on(
                            isa,
                            &k,
                            &gt,
                            2048,
                            Channels::single(),
                            &dy,
                            black_box(&x),
                            &mut dx,
                            &mut dth,
                        );
                        black_box(dth)
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
