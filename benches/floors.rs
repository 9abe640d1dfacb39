//! What bounds the table kernels on this CPU: each cost of the AVX-512 table forward
//! and backward measured alone, beside the whole kernel, single thread, on 64K float32 elements
//! (in the L2 cache, so that the memory stream does not hide them).
//!
//! - `copy`: the stream alone (load, store).
//! - `gather`: index of each element as the nearest-node kernel computes it, then one 16-lane
//!   gather from a 2048-entry table (8 KB, in L1); `gather_all_lanes_off`: the same gather with
//!   an all-zero mask (it loads nothing; on Zen 5 it costs as much, so lanes outside [a, b] are no
//!   cheaper, and compacting the in-range lanes before gathering did not pay for its compress and
//!   expand when tried).
//! - `nearest_kernel`: the plugin's whole AVX-512 nearest forward (the gather, Φ, the product).
//! - `histogram_f64`: the backward's dθ sums, one f64 read-add-write per element into 2048 bins,
//!   bins drawn as the bench's inputs fall (normal); `histogram_f64_gather_scatter`: the same with
//!   8-lane gathers and scatters where the conflict check finds no repeated bin.
//! - `grad_kernel`: the plugin's whole AVX-512 nearest backward (dX and the dθ sums).
//!
//! `cargo bench --bench floors`; without AVX-512 F/CD/VL it says so and runs nothing.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ditac::core::kernels::{table_backward_on, table_forward_on, Channels, Isa};
use ditac::core::{basis, Activation, Attrs, BasisKind};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use std::hint::black_box;

const THETA: [f32; 9] = [0.8, -0.5, 0.3, 1.1, -0.9, 0.4, 0.2, -0.7, 0.6];
const NODES: usize = 2048;

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
/// N(0, 1) samples, seeded (as `ditac bench` draws its input).
fn normal(n: usize) -> Vec<f32> {
    SmallRng::seed_from_u64(0x9E37_79B9_7F4A_7C15)
        .sample_iter(StandardNormal)
        .take(n)
        .collect()
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
/// The node each element of x ~ N(0, 1) falls on in [−4, 4] (as `histogram` bins).
fn bins(x: &[f32]) -> Vec<u32> {
    x.iter()
        .map(|&v| (((v + 4.0) / 8.0 * (NODES - 1) as f32).clamp(0.0, (NODES - 1) as f32)) as u32)
        .collect()
}

#[cfg(target_arch = "x86_64")]
mod lanes {
    use std::arch::x86_64::*;

    /// Nearest-node index on [−0.5, 2] as `locate16` computes it, then a 16-lane gather (masked
    /// by `in_range`, or with no lane on).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn gather(table: &[f32], x: &[f32], y: &mut [f32], lanes_on: bool) {
        assert!(table.len() >= super::NODES && y.len() == x.len() && x.len().is_multiple_of(16));
        let c = _mm512_set1_ps;
        let (lo, hi, last) = (c(-0.5), c(2.0), _mm512_set1_epi32(super::NODES as i32 - 1));
        for j in (0..x.len()).step_by(16) {
            let xv = _mm512_loadu_ps(x.as_ptr().add(j));
            let inr =
                _mm512_cmp_ps_mask::<_CMP_GE_OQ>(xv, lo) & _mm512_cmp_ps_mask::<_CMP_LE_OQ>(xv, hi);
            let p = _mm512_mul_ps(_mm512_mul_ps(_mm512_add_ps(xv, c(0.5)), c(0.4)), c(2047.0));
            let i = _mm512_min_epi32(
                _mm512_max_epi32(_mm512_cvtps_epi32(p), _mm512_setzero_si512()),
                last,
            );
            let m = if lanes_on { inr } else { 0 };
            let v = _mm512_mask_i32gather_ps::<4>(xv, m, i, table.as_ptr());
            _mm512_storeu_ps(y.as_mut_ptr().add(j), v);
        }
    }

    /// hist[bin[j]] += s[j] for 8 elements at a time: gather, add, scatter where the 8 bins
    /// differ (the conflict check), one by one where they do not.
    #[target_feature(enable = "avx512f,avx512cd,avx512vl")]
    pub unsafe fn histogram_gather_scatter(hist: &mut [f64], bin: &[u32], s: &[f64]) {
        assert!(bin.len() == s.len() && bin.len().is_multiple_of(8));
        assert!(bin.iter().all(|&b| (b as usize) < hist.len()));
        let hp = hist.as_mut_ptr();
        for j in (0..bin.len()).step_by(8) {
            let i = _mm256_loadu_si256(bin.as_ptr().add(j) as *const __m256i);
            let conflicts = _mm256_conflict_epi32(i);
            if _mm256_testz_si256(conflicts, conflicts) != 0 {
                let old = _mm512_i32gather_pd::<8>(i, hp as *const f64);
                let new = _mm512_add_pd(old, _mm512_loadu_pd(s.as_ptr().add(j)));
                _mm512_i32scatter_pd::<8>(hp, i, new);
            } else {
                for q in j..j + 8 {
                    *hp.add(bin[q] as usize) += s[q];
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn bench(_: &mut Criterion) {
    eprintln!("skipped: every floor (not an x86-64 CPU)");
}

#[cfg(target_arch = "x86_64")]
fn bench(c: &mut Criterion) {
    let avx512 = Isa::Avx512.supported()
        && std::arch::is_x86_feature_detected!("avx512cd")
        && std::arch::is_x86_feature_detected!("avx512vl");
    if !avx512 {
        eprintln!("skipped: every floor (AVX-512 F/CD/VL not supported by this CPU)");
        return;
    }
    let n = 1 << 16;
    let x = normal(n);
    let mut y = vec![0.0f32; n];
    let table: Vec<f32> = (0..NODES).map(|i| i as f32 / (NODES - 1) as f32).collect();
    let at = Attrs::default();
    let b = basis::build(10, true, BasisKind::Qr).unwrap();
    let act = Activation::<f32>::from_theta(&at, &b, &THETA, true).unwrap();
    let (k, grads) = act.table_kernel().unwrap();
    let grads = grads.unwrap();

    let mut g = c.benchmark_group("floors");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("copy", |bch| bch.iter(|| y.copy_from_slice(black_box(&x))));
    for (name, on) in [("gather", true), ("gather_all_lanes_off", false)] {
        g.bench_function(name, |bch| {
            // SAFETY: AVX-512 F checked above; the sizes are asserted inside.
            bch.iter(|| unsafe { lanes::gather(&table, black_box(&x), &mut y, on) })
        });
    }
    g.bench_function("nearest_kernel", |bch| {
        bch.iter(|| table_forward_on(Isa::Avx512, &k, black_box(&x), &mut y))
    });

    let bin = bins(&x);
    let s: Vec<f64> = x.iter().map(|&v| f64::from(v) * 0.5).collect();
    let mut hist = vec![0.0f64; NODES];
    g.bench_function("histogram_f64", |bch| {
        bch.iter(|| {
            for (&i, &sj) in black_box(&bin).iter().zip(&s) {
                hist[i as usize] += sj;
            }
        })
    });
    g.bench_function("histogram_f64_gather_scatter", |bch| {
        // SAFETY: AVX-512 F/CD/VL checked above; the bins are asserted inside.
        bch.iter(|| unsafe { lanes::histogram_gather_scatter(&mut hist, black_box(&bin), &s) })
    });
    black_box(&hist);
    let dy = vec![1.0f32; n];
    let mut dx = vec![0.0f32; n];
    let mut dtheta = vec![0.0f64; 9];
    g.bench_function("grad_kernel", |bch| {
        bch.iter(|| {
            table_backward_on(
                Isa::Avx512,
                &k,
                &grads,
                at.lut_size as usize,
                Channels::single(),
                &dy,
                black_box(&x),
                &mut dx,
                &mut dtheta,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
