//! What a kernel knows of its node, the same for the CPU and the CUDA kernels: the attributes (read
//! from the kernel info by the core's one reader, `Attrs::read`), where the op's inputs are, the
//! basis, and the warps of θ (or the table) — built at creation when θ (or the table, and B) is a
//! constant initializer, otherwise at run time and cached by content.

use std::sync::{Arc, Mutex, MutexGuard};

use super::context::{KernelContext, KernelInfo, TensorView};
use super::{OpKind, PResult, PluginError};
use crate::core::real::Real;
use crate::core::warps::{explicit_basis, fmt_shape};
use crate::core::{basis, AttrSet, Attrs, Basis, BasisKind, Warps};

type Cache<R> = Mutex<Option<(Vec<u32>, Arc<Warps<R>>)>>;

/// A node of op `kind` whose warps are computed in precision `R`.
pub(super) struct Node<R: Real> {
    /// `ai.ditac.DiTAC node 'act1'`: the start of every message about this node.
    prefix: String,
    kind: OpKind,
    attrs: Attrs,
    x_idx: usize,
    dy_idx: Option<usize>,
    p_idx: usize,
    b_idx: Option<usize>,
    /// The basis when known at creation (a named construction, or a constant explicit B).
    basis: Option<Arc<Basis>>,
    /// The warps when θ (or the table) is a constant initializer.
    fixed: Option<Arc<Warps<R>>>,
    /// The last run-time warps, keyed on the bits and shapes of θ (or the table) and B.
    cache: Cache<R>,
    /// The memory budget of this node's tables (`core::budget`).
    max_bytes: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<R: Real> Node<R> {
    pub(super) fn new(kind: OpKind, info: &KernelInfo, prefix: &str) -> PResult<Self> {
        let set = match kind {
            OpKind::Lut => AttrSet::Table,
            OpKind::Ditac | OpKind::Grad => AttrSet::Warp,
        };
        let attrs = Attrs::read(info, set)?;
        let (x_idx, dy_idx, p_idx, b_idx) = match kind {
            OpKind::Ditac => (0, None, 1, Some(2)),
            OpKind::Lut => (0, None, 1, None),
            OpKind::Grad => (1, Some(0), 2, Some(3)),
        };
        let mut basis = None;
        if let Some(bi) = b_idx {
            let b_const = info.constant_input_f32(bi)?;
            if attrs.basis == BasisKind::Explicit {
                if info.input_count()? <= bi {
                    return Err(attrs.missing_basis().into());
                }
                if let Some(b) = b_const {
                    basis = Some(Arc::new(explicit_basis(&attrs, &b.shape, &b.data)?));
                }
            } else {
                if b_const.is_some() {
                    return Err(attrs.basis_not_explicit().into());
                }
                basis = Some(basis::build(
                    attrs.tess(),
                    attrs.zero_boundary(),
                    attrs.basis,
                )?);
            }
        }
        let mut node = Node {
            prefix: prefix.to_string(),
            kind,
            attrs,
            x_idx,
            dy_idx,
            p_idx,
            b_idx,
            basis,
            fixed: None,
            cache: Mutex::new(None),
            max_bytes: info.max_bytes(),
        };
        if let Some(p) = info.constant_input_f32(p_idx)? {
            if kind == OpKind::Lut || node.basis.is_some() {
                let w = node.build(&p.shape, &p.data, node.basis.as_deref())?;
                node.fixed = Some(Arc::new(w));
            }
        }
        Ok(node)
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(super) fn kind(&self) -> OpKind {
        self.kind
    }

    fn param_name(&self) -> &'static str {
        if self.kind == OpKind::Lut {
            "table"
        } else {
            "theta"
        }
    }

    /// The warps of θ (or the table) of `shape`: one per row.
    fn build(&self, shape: &[usize], data: &[f32], basis: Option<&Basis>) -> PResult<Warps<R>> {
        let grad = self.kind == OpKind::Grad;
        Ok(match basis {
            Some(b) => Warps::from_theta_within(&self.attrs, b, shape, data, grad, self.max_bytes)?,
            None => Warps::from_table_within(&self.attrs, shape, data, self.max_bytes)?,
        })
    }

    /// Whether `w` are the warps built at creation (θ or the table a constant initializer).
    pub(super) fn is_fixed(&self, w: &Arc<Warps<R>>) -> bool {
        self.fixed.as_ref().is_some_and(|f| Arc::ptr_eq(f, w))
    }

    /// Input indices: (X, dY).
    pub(super) fn data_inputs(&self) -> (usize, Option<usize>) {
        (self.x_idx, self.dy_idx)
    }

    /// (C, inner) for X of `shape` with the warps `w` (θ's rows checked against X's channels).
    pub(super) fn layout(&self, shape: &[usize], w: &Warps<R>) -> PResult<(usize, usize)> {
        Ok(w.layout(shape, self.attrs.channel_axis)?)
    }

    /// dY must have the shape of X.
    pub(super) fn check_dy(dy: &[usize], x: &[usize]) -> PResult<()> {
        if dy != x {
            return Err(PluginError::invalid(format!(
                "input 'dY' has shape {}: expected the shape of X {}",
                fmt_shape(dy),
                fmt_shape(x)
            )));
        }
        Ok(())
    }

    /// The warps for this run: constant, cached (same content), or built now.
    pub(super) fn warps(&self, ctx: &KernelContext) -> PResult<Arc<Warps<R>>> {
        let b_in = match self.b_idx {
            Some(i) => ctx.input::<f32>(i)?,
            None => None,
        };
        if b_in.is_some() && self.attrs.basis != BasisKind::Explicit {
            return Err(self.attrs.basis_not_explicit().into());
        }
        if let Some(w) = &self.fixed {
            return Ok(w.clone());
        }
        let p = ctx.input::<f32>(self.p_idx)?.ok_or_else(|| {
            PluginError::invalid(format!("input '{}' is missing", self.param_name()))
        })?;
        let key = cache_key(&p, b_in.as_ref());
        if let Some((k, w)) = &*lock(&self.cache) {
            if *k == key {
                return Ok(w.clone());
            }
        }
        let owned;
        let basis = match (self.kind, &self.basis) {
            (OpKind::Lut, _) => None,
            (_, Some(b)) => Some(&**b),
            (_, None) => {
                let b = b_in.as_ref().ok_or_else(|| self.attrs.missing_basis())?;
                owned = explicit_basis(&self.attrs, &b.shape, b.data)?;
                Some(&owned)
            }
        };
        let w = Arc::new(self.build(&p.shape, p.data, basis)?);
        *lock(&self.cache) = Some((key, w.clone()));
        Ok(w)
    }
}

/// Shapes and bit patterns of θ (or the table) and B: equal keys ⇒ identical warps.
fn cache_key(p: &TensorView<'_, f32>, b: Option<&TensorView<'_, f32>>) -> Vec<u32> {
    let mut key = Vec::with_capacity(p.len() + 8 + b.map_or(0, |b| b.len()));
    for t in std::iter::once(p).chain(b) {
        key.push(t.shape.len() as u32);
        key.extend(t.shape.iter().map(|&d| d as u32));
        key.extend(t.data.iter().map(|v| v.to_bits()));
    }
    key
}
