//! Lookup tables of T̂ on n nodes of [0,1] (ditac.md §6): values, dT̂/du and dT̂/dθ.

use super::cpa::Field;
use super::real::Real;

/// Node i of `torch.linspace(0, 1, n)` in the precision R: the first half counts up from 0,
/// the second half down from 1, as torch's kernel does.
#[inline]
pub fn node<R: Real>(i: usize, n: usize) -> R {
    let step = R::ONE / R::from_usize(n - 1);
    if i < n / 2 {
        step * R::from_usize(i)
    } else {
        R::ONE - step * R::from_usize(n - 1 - i)
    }
}

/// T̂ and, optionally, its derivatives at every node.
#[derive(Debug, Clone)]
pub struct Table<R: Real> {
    pub n: usize,
    /// T̂(g_i), on the normalised domain (the reference's `lingrid_t`).
    pub t: Vec<R>,
    /// dT̂/du(g_i); empty unless built with gradients.
    pub dt: Vec<R>,
    /// dT̂/dθ(g_i), n×d row-major; empty unless built with gradients.
    pub dtheta: Vec<R>,
    pub d: usize,
}

impl<R: Real> Table<R> {
    pub fn build(field: &Field<R>, n: usize, with_grad: bool) -> Self {
        assert!(n >= 2);
        let d = field.d();
        let mut t = Vec::with_capacity(n);
        let (mut dt, mut dtheta) = if with_grad {
            (Vec::with_capacity(n), vec![R::ZERO; n * d])
        } else {
            (Vec::new(), Vec::new())
        };
        for i in 0..n {
            let g = node::<R>(i, n);
            let tr = field.trace(g);
            t.push(tr.value);
            if with_grad {
                dt.push(field.d_du(g, &tr));
                field.d_dtheta(g, &tr, &mut dtheta[i * d..(i + 1) * d]);
            }
        }
        Table {
            n,
            t,
            dt,
            dtheta,
            d,
        }
    }

    /// A table given as values only (the `DiTACLut` form).
    pub fn from_values(t: Vec<R>) -> Self {
        Table {
            n: t.len(),
            t,
            dt: Vec::new(),
            dtheta: Vec::new(),
            d: 0,
        }
    }

    pub fn has_grad(&self) -> bool {
        !self.dt.is_empty()
    }
}
