//! Closed-form null-space bases `rref` and `sparse`, ported from difw's `Tessellation`
//! (`difw/core/tessellation.py`, v0.0.29, identical in DiTAC's `ditac/utils/tessellation.py`):
//! `basis_rref`, `basis_rref_zb`, `basis_sparse`, `basis_sparse_zb`, with `self.ord = np.inf`.
//!
//! Details reproduced from the source (`xmin = 0`, `xmax = 1` are Python ints there):
//! * `s = (xmax - xmin) / nc`; vertex positions are recomputed inline as `xmin + k*s` (not linspace).
//! * rref builds the basis vectors as *rows* of a `d × D` matrix, divides each by its ∞-norm
//!   (max |entry|, `np.linalg.norm(B, ord=inf, axis=1)`) and transposes. `basis_rref` (no zero
//!   boundary) then overwrites the slope entries of column d-2 (the `v(u) = u` vector) with `1/nc`.
//! * sparse builds the D × (nc+1) "tent" basis with two `np.arange` calls, divides every entry by `s`,
//!   then each column by its ∞-norm. With zero boundary the first and last columns are dropped and the
//!   columns are normalised again (a no-op in exact terms, kept for fidelity).
//! * `np.arange(start, stop, step)` fills `x[0] = start`, `x[1] = start + step`, and
//!   `x[i] = start + i*(x[1] - x[0])` for i ≥ 2; we reproduce that. For some nc (the first is 49)
//!   `np.arange` returns nc+1 elements and the reference's `basis_sparse` raises a shape error; here we
//!   use the first nc elements (the mathematically intended values) instead of failing.

use super::Basis;

/// ∞-norm normalisation of the rows of a `n × len` row-major matrix (each row divided by max |entry|).
fn normalise_rows_inf(rows: &mut [f64], len: usize) {
    if len == 0 {
        return;
    }
    for r in rows.chunks_mut(len) {
        let m = r
            .iter()
            .fold(0.0f64, |m, &v| if v.abs() > m { v.abs() } else { m });
        for v in r.iter_mut() {
            *v /= m;
        }
    }
}

/// Transpose a `n × len` row-major matrix of basis vectors into a `len × n` Basis.
fn transpose_to_basis(vecs: &[f64], n: usize, len: usize) -> Basis {
    let mut data = vec![0.0f64; len * n];
    for j in 0..n {
        for i in 0..len {
            data[i * n + j] = vecs[j * len + i];
        }
    }
    Basis {
        rows: len,
        cols: n,
        data,
    }
}

/// Divide every column of `b` by its ∞-norm (`B / np.linalg.norm(B, ord=inf, axis=0)`).
fn normalise_cols_inf(b: &mut Basis) {
    for j in 0..b.cols {
        let mut m = 0.0f64;
        for i in 0..b.rows {
            let v = b.data[i * b.cols + j].abs();
            if v > m {
                m = v;
            }
        }
        for i in 0..b.rows {
            b.data[i * b.cols + j] /= m;
        }
    }
}

/// numpy `arange(start, stop, step)` values (first `n` of them), with numpy's fill rule.
fn np_arange(start: f64, step: f64, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    out.push(start);
    if n == 1 {
        return out;
    }
    let next = start + step;
    out.push(next);
    let delta = next - start;
    for i in 2..n {
        out.push(start + i as f64 * delta);
    }
    out
}

/// The `rref` basis (difw `basis_rref_zb` with zero boundary, `basis_rref` without).
/// Shape D × d with D = 2·nc, d = nc−1 (zero boundary) or nc+1.
pub fn rref(nc: usize, zero_boundary: bool) -> Basis {
    assert!(nc >= 1, "tessellation needs at least one cell");
    let n = nc;
    let dd = 2 * n;
    let a = 0.0f64; // xmin (int 0 in the reference: `a + x` is exactly x for x >= +0)
    let s = 1.0 / n as f64; // (b - a) / n
    let x = |k: usize| a + k as f64 * s;
    if zero_boundary {
        let rows = n - 1;
        let mut r = vec![0.0f64; rows * dd];
        for k in 1..n {
            let row = &mut r[(k - 1) * dd..k * dd];
            row[0] = a + s; // B[:, 0] = a + s
            row[1] = 0.0; // B[:, 1] = -a * (a + s): int 0 times a float = +0.0
            for c in (2..2 * k).step_by(2) {
                row[c] = s;
            }
            row[2 * k] = -x(k);
            row[2 * k + 1] = x(k) * x(k + 1);
        }
        normalise_rows_inf(&mut r, dd);
        transpose_to_basis(&r, rows, dd)
    } else {
        let rows = n + 1;
        let mut r = vec![0.0f64; rows * dd];
        // B[0, 0] = -1; B[0, 1] = a + s
        r[0] = -1.0;
        r[1] = a + s;
        // B[-2, ::2] = 1 (row n-1; for n = 1 this is row 0 again and overwrites B[0, 0])
        for c in (0..dd).step_by(2) {
            r[(n - 1) * dd + c] = 1.0;
        }
        // B[-1, -2] = 1; B[-1, -1] = -(a + (n-1)*s)   (-0.0 for n = 1)
        r[n * dd + dd - 2] = 1.0;
        r[n * dd + dd - 1] = -x(n - 1);
        for k in 1..n.saturating_sub(1) {
            let row = &mut r[k * dd..(k + 1) * dd];
            for c in (0..2 * k).step_by(2) {
                row[c] = s;
            }
            row[2 * k] = -x(k);
            row[2 * k + 1] = x(k) * x(k + 1);
        }
        normalise_rows_inf(&mut r, dd);
        let mut b = transpose_to_basis(&r, rows, dd);
        // if self.ord == np.inf: B[::2, -2] = 1 / n
        let col = rows - 2;
        let v = 1.0 / n as f64;
        for i in (0..dd).step_by(2) {
            b.data[i * rows + col] = v;
        }
        b
    }
}

/// difw `basis_sparse` (no zero boundary): D × (nc+1) tents, ∞-normalised columns.
fn sparse_full(nc: usize) -> Basis {
    let rows = 2 * nc;
    let cols = nc + 1;
    let xmin = 0.0f64;
    let s = 1.0 / nc as f64;
    let mut b = Basis {
        rows,
        cols,
        data: vec![0.0f64; rows * cols],
    };
    let up = np_arange(xmin + s, s, nc); // np.arange(xmin + s, xmax + s, s)
    let lo = np_arange(xmin, s, nc); // np.arange(xmin, xmax, s)
    for c in 0..nc {
        let r = 2 * c;
        b.data[r * cols + c] = -1.0;
        b.data[r * cols + c + 1] = 1.0;
        b.data[(r + 1) * cols + c] = up[c];
        b.data[(r + 1) * cols + c + 1] = -lo[c]; // -0.0 for c = 0
    }
    for v in b.data.iter_mut() {
        *v /= s;
    }
    normalise_cols_inf(&mut b);
    b
}

/// The `sparse` basis (difw `basis_sparse_zb` with zero boundary, `basis_sparse` without).
/// Shape D × d with D = 2·nc, d = nc−1 (zero boundary) or nc+1.
pub fn sparse(nc: usize, zero_boundary: bool) -> Basis {
    assert!(nc >= 1, "tessellation needs at least one cell");
    let full = sparse_full(nc);
    if !zero_boundary {
        return full;
    }
    // basis_sparse()[:, 1:-1], then normalised again
    let d = nc - 1;
    let mut b = Basis {
        rows: full.rows,
        cols: d,
        data: vec![0.0f64; full.rows * d],
    };
    for i in 0..full.rows {
        for j in 0..d {
            b.data[i * d + j] = full.data[i * full.cols + j + 1];
        }
    }
    normalise_cols_inf(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::super::theta_len;
    use super::*;
    use crate::core::tessellation::constraint_matrix;

    fn check_null(b: &Basis, nc: usize, zb: bool) {
        let (l, lr, lc) = constraint_matrix(nc, zb);
        assert_eq!(lc, b.rows);
        for i in 0..lr {
            for j in 0..b.cols {
                let s: f64 = (0..lc).map(|k| l[i * lc + k] * b.at(k, j)).sum();
                assert!(s.abs() <= 1e-12, "nc {nc} zb {zb}: (LB)[{i},{j}] = {s}");
            }
        }
    }

    /// Rank by Gaussian elimination with partial pivoting.
    fn rank(b: &Basis) -> usize {
        let (m, n) = (b.rows, b.cols);
        let mut a = b.data.clone();
        let mut rank = 0;
        for c in 0..n {
            let p = (rank..m).max_by(|&x, &y| a[x * n + c].abs().total_cmp(&a[y * n + c].abs()));
            let Some(p) = p else { break };
            if a[p * n + c].abs() < 1e-9 {
                continue;
            }
            for k in 0..n {
                a.swap(rank * n + k, p * n + k);
            }
            for r in rank + 1..m {
                let f = a[r * n + c] / a[rank * n + c];
                for k in c..n {
                    a[r * n + k] -= f * a[rank * n + k];
                }
            }
            rank += 1;
        }
        rank
    }

    fn check_inf_normalised(b: &Basis) {
        for j in 0..b.cols {
            let m = (0..b.rows).map(|i| b.at(i, j).abs()).fold(0.0, f64::max);
            assert!(m <= 1.0 && m > 0.0, "column {j} max {m}");
        }
    }

    #[test]
    fn null_space_rank_shape() {
        for nc in 1..=64 {
            for zb in [false, true] {
                for (name, b) in [("rref", rref(nc, zb)), ("sparse", sparse(nc, zb))] {
                    let d = theta_len(nc, zb);
                    assert_eq!(
                        (b.rows, b.cols, b.data.len()),
                        (2 * nc, d, 2 * nc * d),
                        "{name} {nc} {zb}"
                    );
                    check_null(&b, nc, zb);
                    assert_eq!(rank(&b), d, "{name} nc {nc} zb {zb} not full rank");
                    assert!(b.data.iter().all(|v| v.is_finite()));
                }
            }
        }
    }

    #[test]
    fn columns_inf_normalised() {
        for nc in 1..=64 {
            check_inf_normalised(&rref(nc, true));
            check_inf_normalised(&sparse(nc, true));
            check_inf_normalised(&sparse(nc, false));
            // every column of sparse has an entry of exactly ±1
            for zb in [false, true] {
                let b = sparse(nc, zb);
                for j in 0..b.cols {
                    assert!((0..b.rows).any(|i| b.at(i, j).abs() == 1.0));
                }
            }
        }
    }

    #[test]
    fn tess_one() {
        for zb_basis in [rref(1, true), sparse(1, true)] {
            assert_eq!((zb_basis.rows, zb_basis.cols), (2, 0));
            assert!(zb_basis.data.is_empty());
        }
        // basis_rref, nc = 1: rows = 2. Row 0 is first [-1, s], then `B[-2, ::2] = 1` hits the same row
        // -> [1, 1]. Row 1 = [1, -(0 + 0*s)] = [1, -0.0]. Norms 1, 1; then B[::2, -2] = 1/1.
        let b = rref(1, false);
        assert_eq!((b.rows, b.cols), (2, 2));
        assert_eq!(b.data, vec![1.0, 1.0, 1.0, -0.0]);
        assert!(b.at(1, 1).is_sign_negative());
        // basis_sparse, nc = 1: [[-1, 1], [1, -0.0]] / 1, column norms 1.
        let b = sparse(1, false);
        assert_eq!(b.data, vec![-1.0, 1.0, 1.0, -0.0]);
        assert!(b.at(1, 1).is_sign_negative());
    }

    #[test]
    fn hand_checked_tess3() {
        // basis_rref_zb, nc = 3, s = 1/3, x_k = k*s (x_3 = 3*s = 1.0 exactly):
        //   vector k=1: [s, +0, -x1, x1*x2, 0, 0]   max|.| = s   -> [1, 0, -1, 2/3, 0, 0]
        //   vector k=2: [s, +0, s, 0, -x2, x2*x3]   max|.| = x2  -> [1/2, 0, 1/2, 0, -1, 1]
        // and B is their transpose (6 × 2).
        let b = rref(3, true);
        let s = 1.0 / 3.0;
        #[rustfmt::skip]
        let expect = [
            1.0, 0.5,
            0.0, 0.0,
            -1.0, 0.5,
            s * (2.0 * s) / s, 0.0,
            0.0, -1.0,
            0.0, 1.0,
        ];
        assert_eq!((b.rows, b.cols), (6, 2));
        for (g, e) in b.data.iter().zip(expect) {
            assert!((g - e).abs() < 1e-15, "{:?}", b.data);
        }
        assert!((b.at(3, 0) - 2.0 / 3.0).abs() < 1e-15);
        assert!(b.at(1, 0).is_sign_positive()); // -a*(a+s) with int a = 0 is +0.0

        // basis_rref, nc = 3 (no zero boundary), 4 vectors:
        //   row 0: [-1, s, 0, 0, 0, 0]                    (max 1)
        //   row 1 (k=1): [s, 0, -x1, x1*x2, 0, 0]         (max s)   -> [1, 0, -1, 2/3, 0, 0]
        //   row 2 (= -2): slopes 1 -> [1, 0, 1, 0, 1, 0]  (max 1), later slopes set to 1/n = 1/3
        //   row 3 (= -1): [0, 0, 0, 0, 1, -x2]            (max 1)
        let b = rref(3, false);
        #[rustfmt::skip]
        let expect = [
            -1.0, 1.0, s, 0.0,
            s, 0.0, 0.0, 0.0,
            0.0, -1.0, s, 0.0,
            0.0, 2.0 / 3.0, 0.0, 0.0,
            0.0, 0.0, s, 1.0,
            0.0, 0.0, 0.0, -2.0 / 3.0,
        ];
        assert_eq!((b.rows, b.cols), (6, 4));
        for (g, e) in b.data.iter().zip(expect) {
            assert!((g - e).abs() < 1e-15, "{:?}", b.data);
        }

        // basis_sparse, nc = 3: tent column j at vertex x_j. Cell c (rows 2c, 2c+1) gets
        //   column c:   slope -1, intercept arange(s, 1+s, s)[c]  = x_{c+1}
        //   column c+1: slope +1, intercept -arange(0, 1, s)[c] = -x_c   (-0.0 for c = 0)
        // all divided by s (slopes ±3, intercepts ≈ integers), then each column by its max (3):
        let b = sparse(3, false);
        #[rustfmt::skip]
        let expect = [
            -1.0, 1.0, 0.0, 0.0,
            s, -0.0, 0.0, 0.0,
            0.0, -1.0, 1.0, 0.0,
            0.0, 2.0 / 3.0, -s, 0.0,
            0.0, 0.0, -1.0, 1.0,
            0.0, 0.0, 1.0, -2.0 / 3.0,
        ];
        for (g, e) in b.data.iter().zip(expect) {
            assert!((g - e).abs() < 1e-15, "{:?}", b.data);
        }
        assert!(b.at(1, 1).is_sign_negative());
        // basis_sparse_zb keeps the interior columns 1 and 2.
        let bz = sparse(3, true);
        assert_eq!((bz.rows, bz.cols), (6, 2));
        for i in 0..6 {
            assert_eq!(bz.at(i, 0).to_bits(), b.at(i, 1).to_bits());
            assert_eq!(bz.at(i, 1).to_bits(), b.at(i, 2).to_bits());
        }
    }

    #[test]
    fn np_arange_fill_rule() {
        // x[i] = start + i*(x[1]-x[0]) reproduces numpy for a few values checked by hand.
        let a = np_arange(0.0, 0.1, 4);
        assert_eq!(a, vec![0.0, 0.1, 0.2, 0.30000000000000004]);
    }
}
