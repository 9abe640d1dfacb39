//! The warps of one θ (or table) tensor: one [`Activation`] per row — `[n]` is one warp for the
//! whole tensor, `[C, n]` one per channel — and, for float32 tables, every row's tables joined
//! channel after channel ([`Joined`]) for the one-pass per-channel kernels. The CPU plugin, the CUDA
//! packing (`crate::cuda::HostTables`), and the tools (`freeze`, `lower`, `plot`, `eval`) all build
//! their warps here, with the same checks and messages.

use super::activation::{channel_layout, Activation};
use super::basis::{self, Basis};
use super::config::Attrs;
use super::error::{DitacError, Result};
use super::kernels::{GradTables, TableKernel};
use super::real::Real;

/// `[2, 3]` for error messages.
pub fn fmt_shape(s: &[usize]) -> String {
    let v: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", v.join(", "))
}

/// B given as a tensor: rank 2, then the checks of [`basis::explicit`] (shape [2·tess, d], finite,
/// L·B ≈ 0).
pub fn explicit_basis(attrs: &Attrs, shape: &[usize], data: &[f32]) -> Result<Basis> {
    if shape.len() != 2 {
        return Err(DitacError::input(
            "B",
            format!(
                "has shape {}: expected [{}, {}] (2·tess × d)",
                fmt_shape(shape),
                2 * attrs.tess(),
                attrs.theta_len()
            ),
        ));
    }
    basis::explicit(
        attrs.tess(),
        attrs.zero_boundary(),
        data,
        shape[0],
        shape[1],
    )
}

/// One warp per row of θ (or of a table), with the rows' float32 tables joined when there are
/// several rows.
#[derive(Debug, Clone)]
pub struct Warps<R: Real> {
    /// θ's (or the table's) shape: `[n]` (shared) or `[C, n]` (per channel).
    shape: Vec<usize>,
    /// "theta" or "table", for messages.
    param: &'static str,
    acts: Vec<Activation<R>>,
    /// Every row's f32 tables one after the other (several rows, float32 tables).
    joined: Option<JoinedTables>,
}

/// What one row of a warp tensor costs and what may be spent (see `core::budget`).
struct Budget {
    /// Bytes of one row's tables (None inside: beyond any count; None: not sized, the attributes
    /// are refused by the row's own checks).
    per_row: Option<Option<u128>>,
    nodes: i64,
    grad: bool,
    max_bytes: u64,
}

/// The budget of callers that do not give one: `DITAC_MAX_BYTES`, else 1 GiB (a malformed variable
/// counts as the default; the plugin and the tools report it where they read it).
fn default_budget() -> u64 {
    super::budget::from_env().unwrap_or(super::budget::DEFAULT_MAX_BYTES)
}

/// The tables of C rows one after the other (row-major C×n, C×2n, C×n×d).
#[derive(Debug, Clone)]
struct JoinedTables {
    xt: Vec<f32>,
    pairs: Vec<f32>,
    dt: Vec<f32>,
    xdt: Vec<f32>,
    dtheta: Vec<f32>,
    d: usize,
}

/// Every row's float32 tables, channel after channel, with the scalars they share (those of row 0;
/// every row of one tensor has the same attributes).
#[derive(Clone, Copy)]
pub struct Joined<'a> {
    /// Row 0's constants; `xt` and `pairs` hold every row's nodes.
    pub kernel: TableKernel<'a>,
    /// The gradient tables of every row, when the warps were built with them.
    pub grad: Option<GradTables<'a>>,
    /// n: nodes per row.
    pub nodes: usize,
    /// C: rows.
    pub channels: usize,
    /// (b − a): dx̃'s factor back to original units (also without gradient tables).
    pub mul_out: f32,
}

/// Appends `suffix` to the message of `e`.
fn with_suffix(e: DitacError, suffix: &str) -> DitacError {
    match e {
        DitacError::BadAttribute {
            name,
            value,
            expected,
        } => DitacError::BadAttribute {
            name,
            value,
            expected: format!("{expected}{suffix}"),
        },
        DitacError::BadInput { name, problem } => DitacError::BadInput {
            name,
            problem: format!("{problem}{suffix}"),
        },
        DitacError::AttributeType { name, ty, detail } => DitacError::AttributeType {
            name,
            ty,
            detail: format!("{detail}{suffix}"),
        },
        DitacError::TooLarge { what, bytes, limit } => DitacError::TooLarge {
            what: format!("{what}{suffix}"),
            bytes,
            limit,
        },
        DitacError::OutOfMemory { what, bytes } => DitacError::OutOfMemory {
            what: format!("{what}{suffix}"),
            bytes,
        },
    }
}

impl<R: Real> Warps<R> {
    /// The warps of θ (`[d]` or `[C, d]`, row-major `data`) in `basis`; `with_grad` builds the
    /// gradient tables (`DiTACGrad`). Under the default memory budget (`budget::from_env`).
    pub fn from_theta(
        attrs: &Attrs,
        basis: &Basis,
        shape: &[usize],
        data: &[f32],
        with_grad: bool,
    ) -> Result<Self> {
        Self::from_theta_within(attrs, basis, shape, data, with_grad, default_budget())
    }

    /// [`Warps::from_theta`] under a memory budget of `max_bytes` for all the rows' tables.
    pub fn from_theta_within(
        attrs: &Attrs,
        basis: &Basis,
        shape: &[usize],
        data: &[f32],
        with_grad: bool,
        max_bytes: u64,
    ) -> Result<Self> {
        let expected = format!("[d] or [C, d] with d = {}", attrs.theta_len());
        // Sized only once the attributes are valid: a bad lut_size gets its own message.
        let per_row = attrs
            .validate()
            .ok()
            .map(|()| Activation::<R>::table_bytes(attrs, attrs.theta_len(), with_grad));
        let budget = Budget {
            per_row,
            nodes: attrs.lut_size,
            grad: with_grad,
            max_bytes,
        };
        Self::build("theta", &expected, shape, data, &budget, |row| {
            Activation::from_theta(attrs, basis, row, with_grad)
        })
    }

    /// The warps of a `DiTACLut` table (`[n]` or `[C, n]`, row-major `data`), under the default
    /// memory budget.
    pub fn from_table(attrs: &Attrs, shape: &[usize], data: &[f32]) -> Result<Self> {
        Self::from_table_within(attrs, shape, data, default_budget())
    }

    /// [`Warps::from_table`] under a memory budget of `max_bytes`.
    pub fn from_table_within(
        attrs: &Attrs,
        shape: &[usize],
        data: &[f32],
        max_bytes: u64,
    ) -> Result<Self> {
        let n = shape.last().copied().unwrap_or(0);
        let sized = Attrs {
            lut_size: i64::try_from(n).unwrap_or(i64::MAX),
            ..attrs.clone()
        };
        let budget = Budget {
            per_row: Some(Activation::<R>::table_bytes(&sized, 0, false)),
            nodes: sized.lut_size,
            grad: false,
            max_bytes,
        };
        Self::build(
            "table",
            "[n] or [C, n] (n ≥ 2 nodes)",
            shape,
            data,
            &budget,
            |row| Activation::from_table(attrs, row),
        )
    }

    /// Warps built elsewhere, one per row of a θ of `shape` (`[n]`: one row, `[C, n]`: C rows).
    pub fn from_rows(shape: &[usize], acts: Vec<Activation<R>>) -> Self {
        Warps {
            shape: shape.to_vec(),
            param: "theta",
            joined: Self::join(&acts),
            acts,
        }
    }

    fn build(
        param: &'static str,
        expected: &str,
        shape: &[usize],
        data: &[f32],
        budget: &Budget,
        row: impl Fn(&[f32]) -> Result<Activation<R>>,
    ) -> Result<Self> {
        let bad_shape = |more: &str| {
            DitacError::input(
                param,
                format!("has shape {}: expected {expected}{more}", fmt_shape(shape)),
            )
        };
        let (rows, n) = match *shape {
            [n] => (None, n),
            [c, n] => (Some(c), n),
            _ => return Err(bad_shape("")),
        };
        if rows == Some(0) {
            return Err(bad_shape(" with C ≥ 1"));
        }
        let count = rows.unwrap_or(1);
        if data.len() != count * n {
            return Err(DitacError::input(
                param,
                format!("holds {} values for shape {}", data.len(), fmt_shape(shape)),
            ));
        }
        if let Some(per_row) = budget.per_row {
            // Several float32 rows are also joined side by side: twice the tables.
            let copies = if count > 1 { 2 } else { 1 };
            let total = per_row
                .and_then(|b| b.checked_mul(count as u128))
                .and_then(|b| b.checked_mul(copies));
            let what = format!(
                "input '{param}' of shape {}: {count} warp table{} of {} nodes{}",
                fmt_shape(shape),
                if count == 1 { "" } else { "s" },
                budget.nodes,
                if budget.grad { " with gradients" } else { "" }
            );
            super::budget::check(&what, total, budget.max_bytes)?;
        }
        let acts = (0..count)
            .map(|r| {
                row(&data[r * n..(r + 1) * n]).map_err(|e| match rows {
                    Some(_) => with_suffix(e, &format!(" (row {r})")),
                    None => e,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Warps {
            shape: shape.to_vec(),
            param,
            joined: Self::join(&acts),
            acts,
        })
    }

    fn join(acts: &[Activation<R>]) -> Option<JoinedTables> {
        if acts.len() < 2 {
            return None;
        }
        let (k0, g0) = acts[0].table_kernel()?;
        let n = k0.xt.len();
        let d = g0.map_or(0, |g| g.d);
        let mut j = JoinedTables {
            xt: Vec::with_capacity(n * acts.len()),
            pairs: Vec::with_capacity(2 * n * acts.len()),
            dt: Vec::new(),
            xdt: Vec::new(),
            dtheta: Vec::new(),
            d,
        };
        for a in acts {
            let (k, g) = a.table_kernel()?;
            if k.xt.len() != n || g.map_or(0, |g| g.d) != d || g.is_some() != g0.is_some() {
                return None;
            }
            j.xt.extend_from_slice(k.xt);
            j.pairs.extend_from_slice(k.pairs);
            if let Some(g) = g {
                j.dt.extend_from_slice(g.dt);
                j.xdt.extend_from_slice(g.xdt);
                j.dtheta.extend_from_slice(g.dtheta);
            }
        }
        Some(j)
    }

    /// θ's (or the table's) shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Whether θ (or the table) is 2-D: one row per channel along `channel_axis`.
    pub fn per_channel(&self) -> bool {
        self.shape.len() == 2
    }

    /// The warps, one per row.
    pub fn rows(&self) -> &[Activation<R>] {
        &self.acts
    }

    /// The warp of channel `c` (the only one when θ is 1-D).
    pub fn row(&self, c: usize) -> &Activation<R> {
        &self.acts[c]
    }

    /// (C, inner) for X of `x_shape`: (1, every element) for a shared warp; otherwise checks that
    /// the rows match X's channels along `channel_axis`.
    pub fn layout(&self, x_shape: &[usize], channel_axis: i64) -> Result<(usize, usize)> {
        if !self.per_channel() {
            return Ok((1, x_shape.iter().product()));
        }
        let rows = self.acts.len();
        let (_, c, inner) = channel_layout(x_shape, channel_axis)?;
        if rows != c {
            return Err(DitacError::input(
                self.param,
                format!(
                    "has {rows} rows: expected C = X.shape[channel_axis] = {c} (attribute 'channel_axis' = {channel_axis}, X has shape {})",
                    fmt_shape(x_shape)
                ),
            ));
        }
        Ok((c, inner))
    }

    /// Every row's float32 tables, channel after channel (None for the exact closed form, or for
    /// tables not in float32).
    pub fn joined(&self) -> Option<Joined<'_>> {
        let (mut kernel, grad) = self.acts.first()?.table_kernel()?;
        let mul_out = self.acts[0].table_parts()?.mul_out.to_f64() as f32;
        let nodes = kernel.xt.len();
        let grad = match &self.joined {
            None if self.acts.len() > 1 => return None,
            None => grad,
            Some(j) => {
                kernel.xt = &j.xt;
                kernel.pairs = &j.pairs;
                grad.map(|g| GradTables {
                    dt: &j.dt,
                    xdt: &j.xdt,
                    dtheta: &j.dtheta,
                    d: j.d,
                    mul_out: g.mul_out,
                })
            }
        };
        Some(Joined {
            kernel,
            grad,
            nodes,
            channels: self.acts.len(),
            mul_out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::BasisKind;

    fn attrs() -> Attrs {
        Attrs {
            tess: 4,
            lut_size: 16,
            ..Attrs::default()
        }
    }

    fn theta(rows: usize) -> Vec<f32> {
        (0..rows * 3).map(|i| 0.1 * i as f32 - 0.3).collect()
    }

    #[test]
    fn rows_joined_channel_after_channel() {
        let at = attrs();
        let b = basis::build(4, true, BasisKind::Qr).unwrap();
        let th = theta(3);
        let w = Warps::<f32>::from_theta(&at, &b, &[3, 3], &th, true).unwrap();
        assert!(w.per_channel());
        let j = w.joined().unwrap();
        assert_eq!((j.channels, j.nodes), (3, 16));
        let g = j.grad.unwrap();
        for r in 0..3 {
            let one = Activation::<f32>::from_theta(&at, &b, &th[r * 3..r * 3 + 3], true).unwrap();
            let (k, gr) = one.table_kernel().unwrap();
            let gr = gr.unwrap();
            assert_eq!(&j.kernel.xt[r * 16..(r + 1) * 16], k.xt);
            assert_eq!(&j.kernel.pairs[r * 32..(r + 1) * 32], k.pairs);
            assert_eq!(&g.dt[r * 16..(r + 1) * 16], gr.dt);
            assert_eq!(&g.dtheta[r * 48..(r + 1) * 48], gr.dtheta);
        }
        // One row: its own tables.
        let w1 = Warps::<f32>::from_theta(&at, &b, &[3], &th[..3], false).unwrap();
        let j1 = w1.joined().unwrap();
        assert_eq!(
            (j1.channels, j1.kernel.xt),
            (1, w1.row(0).table_kernel().unwrap().0.xt)
        );
        assert!(j1.grad.is_none());
        // Double tables and the exact form have no float32 tables to join.
        let w64 = Warps::<f64>::from_theta(&at, &b, &[2, 3], &th[..6], false).unwrap();
        assert!(w64.joined().is_none());
        let exact = Attrs { lut_size: 0, ..at };
        assert!(Warps::<f32>::from_theta(&exact, &b, &[3], &th[..3], false)
            .unwrap()
            .joined()
            .is_none());
    }

    #[test]
    fn shapes_rows_and_channels_are_checked() {
        let at = attrs();
        let b = basis::build(4, true, BasisKind::Qr).unwrap();
        let e = |shape: &[usize], data: &[f32]| {
            Warps::<f32>::from_theta(&at, &b, shape, data, false)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e(&[1, 1, 3], &theta(1)),
            "input 'theta' has shape [1, 1, 3]: expected [d] or [C, d] with d = 3"
        );
        assert_eq!(
            e(&[0, 3], &[]),
            "input 'theta' has shape [0, 3]: expected [d] or [C, d] with d = 3 with C ≥ 1"
        );
        let mut th = theta(2);
        th[4] = f32::NAN;
        assert_eq!(
            e(&[2, 3], &th),
            "input 'theta' has a non-finite value NaN at index 1: expected finite numbers (row 1)"
        );
        assert_eq!(
            Warps::<f32>::from_table(&at, &[2, 1], &[0.0, 1.0])
                .unwrap_err()
                .to_string(),
            "input 'table' has 1 nodes: expected at least 2 (row 0)"
        );
        let w = Warps::<f32>::from_theta(&at, &b, &[2, 3], &theta(2), false).unwrap();
        assert_eq!(w.layout(&[4, 2, 5], 1).unwrap(), (2, 5));
        assert_eq!(
            w.layout(&[4, 3, 5], 1).unwrap_err().to_string(),
            "input 'theta' has 2 rows: expected C = X.shape[channel_axis] = 3 (attribute 'channel_axis' = 1, X has shape [4, 3, 5])"
        );
        let shared = Warps::<f32>::from_theta(&at, &b, &[3], &theta(1), false).unwrap();
        assert_eq!(shared.layout(&[4, 3, 5], 7).unwrap(), (1, 60));
    }
}
