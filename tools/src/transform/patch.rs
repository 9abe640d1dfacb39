//! `patch`: a named one-input, one-output node (a placeholder an exporter left where a DiTAC layer
//! was, or any activation) becomes a `DiTAC` node whose θ is a tensor of a parameter file.

use super::{ensure_ditac_import, ensure_value_info, fresh_name, make_tensor_f32, node_label};
use crate::model::{attribute, ditac_attrs, DITAC_DOMAIN};
use crate::onnx::DITAC;
use crate::params::Params;
use anyhow::{anyhow, bail, Result};
use ditac::basis::{self, BasisKind};
use ditac::config::{AttrSet, AttrValues, Attrs};
use ditac::core::warps::explicit_basis;
use ditac::core::Warps;
use onnx_protobuf::{ModelProto, NodeProto};
use std::collections::BTreeSet;

/// Attributes given on the command line; `None` keeps the ops.md default, except `tess`, which
/// by default follows from θ's length d (d + 1 with a zero boundary, d − 1 without).
#[derive(Debug, Clone, Default)]
pub struct AttrOverrides {
    pub given: AttrValues,
    /// For `basis = "explicit"`: the key of B (`[2·tess, d]`) in the parameter file, for every
    /// node that does not name its own ([`Replacement::basis_key`]).
    pub basis_key: Option<String>,
    /// Accepts `qr` where the reference's `qr` is machine-dependent (see
    /// [`ditac::basis::qr_is_machine_dependent`]): right only for θ trained with this project's qr.
    pub allow_machine_dependent_qr: bool,
}

impl AttrOverrides {
    /// The attributes for a θ with `d` values per row; `own_basis`: the node names its own B.
    pub fn resolve(&self, d: usize, own_basis: bool) -> Result<Attrs> {
        let has_b = own_basis || self.basis_key.is_some();
        let mut given = self.given.clone();
        if given.tess.is_none() {
            given.tess = Some(match given.zero_boundary.unwrap_or(1) {
                0 => d as i64 - 1,
                _ => d as i64 + 1,
            });
        }
        if has_b && given.basis.is_none() {
            given.basis = Some("explicit".to_string());
        }
        let at = Attrs::parse(&given, AttrSet::Warp)?;
        if at.basis == BasisKind::Explicit && !has_b {
            bail!("basis \"explicit\" needs the key of B in the parameter file (--basis-key, or NAME=KEY:B_KEY)");
        }
        if has_b && at.basis != BasisKind::Explicit {
            bail!("a B tensor (--basis-key, or NAME=KEY:B_KEY) is only for basis \"explicit\"");
        }
        at.validate_set(AttrSet::Warp)?;
        if at.theta_len() != d {
            bail!(
                "θ has d = {d} values per row: tess = {}, zero_boundary = {} expects d = {}",
                at.tess,
                at.zero_boundary,
                at.theta_len()
            );
        }
        if at.basis == BasisKind::Qr
            && !self.allow_machine_dependent_qr
            && basis::qr_is_machine_dependent(at.tess(), at.zero_boundary())
        {
            bail!(
                "{}",
                machine_dependent_qr_message(
                    &at,
                    "--basis explicit --basis-key KEY (or --node NAME=KEY:B_KEY)",
                    "--allow-machine-dependent-qr"
                )
            );
        }
        Ok(at)
    }
}

/// Why basis `qr` is refused at `at.tess`, and how to pass the training run's B instead (`how`), or
/// to accept this project's qr anyway (`opt_in`).
pub fn machine_dependent_qr_message(at: &Attrs, how: &str, opt_in: &str) -> String {
    let (tess, d) = (at.tess, at.theta_len());
    let boundary = if at.zero_boundary() {
        " with a zero boundary"
    } else {
        ""
    };
    format!(
        "basis \"qr\" at tess {tess}{boundary} is machine-dependent in the reference: its LAPACK pivoted QR \
         gives a different B on different BLAS builds, so a θ trained there only means something with the B \
         of its own training run (the module's `T.params.B`, [{}, {d}], which is not in the state_dict). \
         Save that B with θ and pass {how} (ditac_onnx.torch.export carries it for you); \
         {opt_in} uses this project's qr B anyway (right only for a θ trained with it)",
        2 * tess
    )
}

/// One replacement: the node called `node` gets θ = the tensor `key` of the parameter file, and
/// with `basis_key` its own B (`basis = "explicit"`).
#[derive(Debug, Clone)]
pub struct Replacement {
    pub node: String,
    pub key: String,
    pub basis_key: Option<String>,
}

/// What [`patch_model`] inferred for one node.
#[derive(Debug, Clone)]
pub struct Patched {
    pub node: String,
    pub key: String,
    pub tess: i64,
    pub d: usize,
    /// Rows of θ: 1 (one θ for the whole tensor) or the channel count along `channel_axis`.
    pub channels: usize,
    pub channel_axis: i64,
    pub basis: BasisKind,
    /// The key of B in the parameter file, for `basis = "explicit"`.
    pub basis_key: Option<String>,
}

/// Replaces each named node by a `DiTAC` node (same name, input and output) reading θ from a new
/// initializer. θ may be `[d]`, `[1, d]` (stored as `[d]`) or `[C, d]` (one row per channel).
pub fn patch_model(
    model: &mut ModelProto,
    params: &Params,
    reps: &[Replacement],
    attrs: &AttrOverrides,
) -> Result<Vec<Patched>> {
    let g = model
        .graph
        .as_mut()
        .ok_or_else(|| anyhow!("the model has no graph"))?;
    let mut taken = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut b_names: std::collections::BTreeMap<String, String> = Default::default();
    let mut done = Vec::with_capacity(reps.len());
    for rep in reps {
        if !seen.insert(rep.node.clone()) {
            bail!("node '{}' is named twice", rep.node);
        }
        let idx: Vec<usize> = g
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| n.name == rep.node)
            .map(|(i, _)| i)
            .collect();
        let i = match idx.as_slice() {
            [i] => *i,
            [] => {
                let names: Vec<String> = g.node.iter().take(12).map(node_label).collect();
                bail!(
                    "no node named '{}' in the graph (it has: {}{})",
                    rep.node,
                    names.join(", "),
                    if g.node.len() > 12 { ", ..." } else { "" }
                );
            }
            _ => bail!(
                "{} nodes are named '{}': names must be unique",
                idx.len(),
                rep.node
            ),
        };
        let old = &g.node[i];
        let ins: Vec<&String> = old.input.iter().filter(|s| !s.is_empty()).collect();
        if ins.len() != 1 || old.output.len() != 1 {
            bail!(
                "node '{}' ({}) has {} inputs and {} outputs: patch replaces one-input, one-output nodes",
                rep.node,
                old.op_type,
                ins.len(),
                old.output.len()
            );
        }
        let (x, y) = (ins[0].clone(), old.output[0].clone());
        let t = params.get(&rep.key)?;
        let (rows, d) = match t.shape.as_slice() {
            [d] => (1, *d),
            [1, d] => (1, *d),
            [c, d] => (*c, *d),
            s => bail!(
                "tensor \"{}\" has shape {s:?}: expected θ as [d], [1, d] or [C, d]",
                rep.key
            ),
        };
        let b_key = rep.basis_key.as_ref().or(attrs.basis_key.as_ref());
        let at = attrs
            .resolve(d, rep.basis_key.is_some())
            .map_err(|e| anyhow!("node '{}': tensor \"{}\": {e:#}", rep.node, rep.key))?;
        if rows > 1 {
            if let Some(c) = channel_dim(g, &x, at.channel_axis) {
                if c != rows as i64 {
                    bail!(
                        "tensor \"{}\" has {rows} rows: node '{}' has {c} channels along axis {}",
                        rep.key,
                        rep.node,
                        at.channel_axis
                    );
                }
            }
        }
        let b = match b_key {
            Some(k) => {
                let bt = params.get(k)?;
                let b = explicit_basis(&at, &bt.shape, &bt.data)
                    .map_err(|e| anyhow!("tensor \"{k}\": {e}"))?;
                if !b_names.contains_key(k) {
                    let name = fresh_name(g, &mut taken, k);
                    g.initializer
                        .push(make_tensor_f32(&name, &bt.shape, &bt.data));
                    b_names.insert(k.clone(), name);
                }
                std::sync::Arc::new(b)
            }
            None => basis::build(at.tess(), at.zero_boundary(), at.basis)?,
        };
        let dims: Vec<usize> = if rows == 1 { vec![d] } else { vec![rows, d] };
        // θ is checked by building its warps, as the plugin will.
        Warps::<f32>::from_theta_within(
            &at,
            &b,
            &dims,
            &t.data,
            false,
            crate::budget::max_bytes()?,
        )
        .map_err(|e| anyhow!("tensor \"{}\": {e}", rep.key))?;
        let tname = fresh_name(g, &mut taken, &rep.key);
        g.initializer.push(make_tensor_f32(&tname, &dims, &t.data));
        let mut n = NodeProto::new();
        n.name = rep.node.clone();
        n.op_type = DITAC.into();
        n.domain = DITAC_DOMAIN.into();
        n.input = vec![x, tname];
        if let Some(bn) = b_key.and_then(|k| b_names.get(k)) {
            n.input.push(bn.clone());
        }
        n.output = vec![y];
        n.doc_string = format!("patched by ditac from \"{}\"", rep.key);
        n.attribute = ditac_attrs(&at)
            .iter()
            .map(|(k, v)| attribute(k, v))
            .collect();
        g.node[i] = n;
        done.push(Patched {
            node: rep.node.clone(),
            key: rep.key.clone(),
            tess: at.tess,
            d,
            channels: rows,
            channel_axis: at.channel_axis,
            basis: at.basis,
            basis_key: b_key.cloned(),
        });
    }
    ensure_value_info(g);
    ensure_ditac_import(model)?;
    Ok(done)
}

/// X.shape[axis] when the graph declares it.
fn channel_dim(g: &onnx_protobuf::GraphProto, x: &str, axis: i64) -> Option<i64> {
    let dims = crate::onnx::declared_dims(&super::value_type(g, x)?)?;
    let r = dims.len() as i64;
    let ax = if axis < 0 { axis + r } else { axis };
    dims.get(usize::try_from(ax).ok()?)?
        .fixed()
        .map(|v| v as i64)
}
