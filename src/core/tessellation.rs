//! The regular 1-D tessellation of Ω = [0, 1] into `nc` equal cells and the CPA constraint matrix L,
//! ported from difw's `Tessellation` (`difw/core/tessellation.py`, v0.0.29; DiTAC ships an identical copy
//! as `ditac/utils/tessellation.py`). Both are always built with `xmin = 0`, `xmax = 1` (Python ints).

/// Vertices x_k = k/nc, k = 0..=nc, exactly as numpy's `linspace(0, 1, nc + 1)`:
/// `k * step` with `step = 1.0 / nc`, and the last element set to exactly 1.0.
pub fn vertices(nc: usize) -> Vec<f64> {
    assert!(nc >= 1, "tessellation needs at least one cell");
    let step = 1.0 / nc as f64;
    let mut v: Vec<f64> = (0..=nc).map(|k| k as f64 * step + 0.0).collect();
    v[nc] = 1.0;
    v
}

/// The constraint matrix L (row-major) of `Tessellation.constrain_matrix`, with `cols = 2·nc`.
///
/// * Rows `i = 0..nc-1` (continuity at the shared vertex x = x_{i+1}): `[x, 1, -x, -1]` at columns
///   `2i .. 2i+4`.
/// * With zero boundary, two more rows (`zero_boundary_constrains`, stacked below):
///   `[-xmin, -1]` at columns 0, 1 and `[-xmax, -1]` at columns D-2, D-1. The reference passes
///   `xmin = 0` as a Python *int*, so `-xmin` is the integer 0 and the stored entry is **+0.0**
///   (not -0.0); `-xmax` is -1.0.
///
/// Returns `(L, rows, cols)`; rows = nc-1 (+2 with zero boundary).
pub fn constraint_matrix(nc: usize, zero_boundary: bool) -> (Vec<f64>, usize, usize) {
    assert!(nc >= 1, "tessellation needs at least one cell");
    let cols = 2 * nc;
    let ns = nc - 1;
    let rows = ns + if zero_boundary { 2 } else { 0 };
    let mut l = vec![0.0f64; rows * cols];
    let v = vertices(nc);
    for (i, &x) in v[1..nc].iter().enumerate() {
        let r = &mut l[i * cols..(i + 1) * cols];
        r[2 * i] = x;
        r[2 * i + 1] = 1.0;
        r[2 * i + 2] = -x;
        r[2 * i + 3] = -1.0;
    }
    if zero_boundary {
        let xmin: i64 = 0;
        let xmax: i64 = 1;
        let r0 = ns * cols;
        l[r0] = (-xmin) as f64; // int negation: +0.0
        l[r0 + 1] = -1.0;
        let r1 = (ns + 1) * cols;
        l[r1 + cols - 2] = (-xmax) as f64;
        l[r1 + cols - 1] = -1.0;
    }
    (l, rows, cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vertices_match_linspace() {
        assert_eq!(vertices(1), vec![0.0, 1.0]);
        assert_eq!(vertices(4), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        let v = vertices(3);
        assert_eq!(v[1], 1.0 / 3.0);
        assert_eq!(v[2], 2.0 * (1.0 / 3.0));
        assert_eq!(v[3], 1.0);
        for nc in 1..=300 {
            let v = vertices(nc);
            assert_eq!(v.len(), nc + 1);
            assert_eq!(v[0].to_bits(), 0.0f64.to_bits());
            assert_eq!(v[nc], 1.0);
            for w in v.windows(2) {
                assert!(w[0] < w[1]);
            }
        }
    }

    #[test]
    fn sizes() {
        for nc in 1..=64 {
            let (l, r, c) = constraint_matrix(nc, false);
            assert_eq!((r, c, l.len()), (nc - 1, 2 * nc, (nc - 1) * 2 * nc));
            let (l, r, c) = constraint_matrix(nc, true);
            assert_eq!((r, c, l.len()), (nc + 1, 2 * nc, (nc + 1) * 2 * nc));
        }
    }

    #[test]
    fn known_small_case() {
        // nc = 2: vertices 0, 0.5, 1; one continuity row at x = 0.5, then the two zero-boundary rows.
        let (l, r, c) = constraint_matrix(2, true);
        assert_eq!((r, c), (3, 4));
        #[rustfmt::skip]
        let expect = [
            0.5, 1.0, -0.5, -1.0,
            0.0, -1.0, 0.0, 0.0,
            0.0, 0.0, -1.0, -1.0,
        ];
        assert_eq!(l, expect);
        // The -xmin entry is +0.0 (Python int 0 negated), not -0.0.
        assert!(l[4].is_sign_positive());
        // Without zero boundary only the continuity row remains.
        let (l, r, _) = constraint_matrix(2, false);
        assert_eq!(r, 1);
        assert_eq!(l, expect[..4]);

        // nc = 3: rows at x = 1/3 (cols 0..4) and x = 2/3 (cols 2..6).
        let (l, r, c) = constraint_matrix(3, false);
        assert_eq!((r, c), (2, 6));
        let x1 = 1.0 / 3.0;
        let x2 = 2.0 * (1.0 / 3.0);
        assert_eq!(&l[0..6], &[x1, 1.0, -x1, -1.0, 0.0, 0.0]);
        assert_eq!(&l[6..12], &[0.0, 0.0, x2, 1.0, -x2, -1.0]);
    }

    #[test]
    fn tess_one() {
        let (l, r, c) = constraint_matrix(1, true);
        assert_eq!((r, c), (2, 2));
        assert_eq!(l, vec![0.0, -1.0, -1.0, -1.0]);
        let (l, r, c) = constraint_matrix(1, false);
        assert_eq!((r, c, l.len()), (0, 2, 0));
    }

    #[test]
    fn continuity_rows_vanish_on_continuous_fields() {
        // A = slopes/intercepts of the global line v(u) = 0.3u - 0.7 is continuous: L_cont·A = 0.
        for nc in 1..=32 {
            let (l, r, c) = constraint_matrix(nc, false);
            let a: Vec<f64> = (0..c)
                .map(|j| if j % 2 == 0 { 0.3 } else { -0.7 })
                .collect();
            for i in 0..r {
                let s: f64 = (0..c).map(|j| l[i * c + j] * a[j]).sum();
                assert!(s.abs() < 1e-15, "nc {nc} row {i}: {s}");
            }
        }
    }
}
