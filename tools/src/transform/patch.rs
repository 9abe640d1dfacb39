//! `patch`: a named one-input, one-output node (a placeholder an exporter left where a DiTAC layer
//! was, or any activation) becomes a `DiTAC` node whose θ is a tensor of a parameter file.

use super::{ensure_ditac_import, ensure_value_info, fresh_name, make_tensor_f32, node_label};
use crate::model::{attribute, ditac_attrs, DITAC_DOMAIN};
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
    /// For `basis = "explicit"`: the key of B (`[2·tess, d]`) in the parameter file.
    pub basis_key: Option<String>,
}

impl AttrOverrides {
    /// The attributes for a θ with `d` values per row.
    pub fn resolve(&self, d: usize) -> Result<Attrs> {
        let mut given = self.given.clone();
        if given.tess.is_none() {
            given.tess = Some(match given.zero_boundary.unwrap_or(1) {
                0 => d as i64 - 1,
                _ => d as i64 + 1,
            });
        }
        let at = Attrs::parse(&given, AttrSet::Warp)?;
        if at.basis == BasisKind::Explicit && self.basis_key.is_none() {
            bail!("basis \"explicit\" needs the key of B in the parameter file (--basis-key)");
        }
        if self.basis_key.is_some() && at.basis != BasisKind::Explicit {
            bail!("a B tensor (--basis-key) is only for basis \"explicit\"");
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
        Ok(at)
    }
}

/// One replacement: the node called `node` gets θ = the tensor `key` of the parameter file.
#[derive(Debug, Clone)]
pub struct Replacement {
    pub node: String,
    pub key: String,
}

/// Replaces each named node by a `DiTAC` node (same name, input and output) reading θ from a new
/// initializer. θ may be `[d]`, `[1, d]` (stored as `[d]`) or `[C, d]` (one row per channel).
pub fn patch_model(
    model: &mut ModelProto,
    params: &Params,
    reps: &[Replacement],
    attrs: &AttrOverrides,
) -> Result<()> {
    let g = model
        .graph
        .as_mut()
        .ok_or_else(|| anyhow!("the model has no graph"))?;
    let mut taken = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut b_name: Option<String> = None;
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
        let at = attrs
            .resolve(d)
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
        let b = match &attrs.basis_key {
            Some(k) => {
                let bt = params.get(k)?;
                let b = explicit_basis(&at, &bt.shape, &bt.data)
                    .map_err(|e| anyhow!("tensor \"{k}\": {e}"))?;
                if b_name.is_none() {
                    let name = fresh_name(g, &mut taken, k);
                    g.initializer
                        .push(make_tensor_f32(&name, &bt.shape, &bt.data));
                    b_name = Some(name);
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
        n.op_type = "DiTAC".into();
        n.domain = DITAC_DOMAIN.into();
        n.input = vec![x, tname];
        if let Some(bn) = &b_name {
            n.input.push(bn.clone());
        }
        n.output = vec![y];
        n.doc_string = format!("patched by ditac from \"{}\"", rep.key);
        n.attribute = ditac_attrs(&at)
            .iter()
            .map(|(k, v)| attribute(k, v))
            .collect();
        g.node[i] = n;
    }
    ensure_value_info(g);
    ensure_ditac_import(model)?;
    Ok(())
}

/// X.shape[axis] when the graph declares it.
fn channel_dim(g: &onnx_protobuf::GraphProto, x: &str, axis: i64) -> Option<i64> {
    let v = super::value_type(g, x)?;
    let onnx_protobuf::type_proto::Value::TensorType(t) = v.type_.value.as_ref()? else {
        return None;
    };
    let dims = &t.shape.as_ref()?.dim;
    let r = dims.len() as i64;
    let ax = if axis < 0 { axis + r } else { axis };
    match dims.get(usize::try_from(ax).ok()?)?.value.as_ref()? {
        onnx_protobuf::tensor_shape_proto::dimension::Value::DimValue(v) => Some(*v),
        _ => None,
    }
}
