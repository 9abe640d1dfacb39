//! What an `ai.ditac` node means: which nodes are DiTAC ops, their attributes, the value_info and
//! opset import they need, and the warps a node with constant parameters computes.

use super::graph_util::{constant_tensor, dims_of, value_type};
use super::model_file::tensor_f32;
use crate::model::{DITAC_DOMAIN, DITAC_OPSET};
use anyhow::{anyhow, bail, Context, Result};
use ditac::config::Attrs;
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
use std::path::Path;

/// The op types of the `ai.ditac` domain.
pub const DITAC_OPS: [&str; 3] = ["DiTAC", "DiTACLut", "DiTACGrad"];

/// Whether `node` is one of the `ai.ditac` ops.
pub fn is_ditac_node(node: &NodeProto) -> bool {
    node.domain == DITAC_DOMAIN && DITAC_OPS.contains(&node.op_type.as_str())
}

/// A printable name of a node: its name, or its first output.
pub fn node_label(node: &NodeProto) -> String {
    if !node.name.is_empty() {
        node.name.clone()
    } else {
        format!(
            "<{} -> {}>",
            node.op_type,
            node.output.first().map_or("", String::as_str)
        )
    }
}

/// The attributes of an `ai.ditac` node (ops.md defaults for missing ones), and the names of those
/// the node sets. Not validated.
pub fn node_attrs(node: &NodeProto) -> Result<(Attrs, Vec<String>)> {
    let mut at = Attrs::default();
    let mut set = Vec::new();
    let label = node_label(node);
    for a in &node.attribute {
        let ty = a.type_.enum_value().ok();
        let float = || -> Result<f32> {
            match ty {
                Some(AttributeType::FLOAT) => Ok(a.f),
                _ => bail!("node '{label}': attribute '{}' has no float value", a.name),
            }
        };
        let int = || -> Result<i64> {
            match ty {
                Some(AttributeType::INT) => Ok(a.i),
                _ => bail!("node '{label}': attribute '{}' has no int value", a.name),
            }
        };
        let string = || -> Result<String> {
            match ty {
                Some(AttributeType::STRING) => Ok(String::from_utf8_lossy(&a.s).into_owned()),
                _ => bail!("node '{label}': attribute '{}' has no string value", a.name),
            }
        };
        let ctx = |e: ditac::DitacError| anyhow!("node '{label}': {e}");
        match a.name.as_str() {
            "a" => at.a = float()?,
            "b" => at.b = float()?,
            "alpha" => at.alpha = float()?,
            "tess" => at.tess = int()?,
            "zero_boundary" => at.zero_boundary = int()?,
            "lut_size" => at.lut_size = int()?,
            "channel_axis" => at.channel_axis = int()?,
            "basis" => at.basis = string()?.parse().map_err(ctx)?,
            "variant" => at.variant = string()?.parse().map_err(ctx)?,
            "interpolation" => at.interpolation = string()?.parse().map_err(ctx)?,
            _ => continue,
        }
        set.push(a.name.clone());
    }
    Ok((at, set))
}

/// Adds value_info for the outputs of `ai.ditac` nodes that have none, with the type and shape
/// of their input X (ops.md: Y has the shape of X).
pub fn ensure_value_info(g: &mut GraphProto) {
    let mut add = Vec::new();
    for n in g.node.iter().filter(|n| is_ditac_node(n)) {
        let pairs: Vec<(&String, &String)> = if n.op_type == "DiTACGrad" {
            // dX mirrors X (input 1).
            n.output.first().zip(n.input.get(1)).into_iter().collect()
        } else {
            n.output.first().zip(n.input.first()).into_iter().collect()
        };
        for (out, inp) in pairs {
            if out.is_empty() || value_type(g, out).is_some() {
                continue;
            }
            if let Some(mut v) = value_type(g, inp) {
                v.name = out.clone();
                v.doc_string.clear();
                add.push(v);
            }
        }
    }
    g.value_info.extend(add);
}

/// Makes sure the model imports `ai.ditac` version 1 (an import of another version is an error).
pub fn ensure_ditac_import(model: &mut ModelProto) -> Result<()> {
    match model.opset_import.iter().find(|o| o.domain == DITAC_DOMAIN) {
        Some(o) if o.version != DITAC_OPSET => bail!(
            "the model imports {DITAC_DOMAIN} version {}: these tools know version {DITAC_OPSET}",
            o.version
        ),
        Some(_) => {}
        None => {
            let mut o = OperatorSetIdProto::new();
            o.domain = DITAC_DOMAIN.to_string();
            o.version = DITAC_OPSET;
            model.opset_import.push(o);
        }
    }
    Ok(())
}

/// The warps of a `DiTAC` or `DiTACLut` node whose θ (or table) is constant, one per row, as the
/// plugin builds them for float tensors (`Activation<f32>`).
pub struct NodeWarps {
    pub attrs: Attrs,
    /// One warp per row of θ (or of the table).
    pub acts: Vec<ditac::Activation<f32>>,
    /// θ (or the table) is 2-D: one row per channel along `channel_axis`.
    pub per_channel: bool,
    /// The names of the constant inputs read (θ and B, or the table).
    pub consts: Vec<String>,
}

/// Builds the warps of `node` (a `DiTAC` or `DiTACLut`), or `None` when its θ/table is not a
/// constant. `lut_size` overrides the attribute (the exact path lowered through a table).
pub fn node_warps(
    g: &GraphProto,
    node: &NodeProto,
    dir: &Path,
    lut: Option<(i64, ditac::Interpolation)>,
) -> Result<Option<NodeWarps>> {
    let label = node_label(node);
    let (mut attrs, _) = node_attrs(node)?;
    let ctx = |e: ditac::DitacError| anyhow!("node '{label}': {e}");
    let pname = node.input.get(1).map_or("", String::as_str);
    let Some(t) = constant_tensor(g, pname) else {
        return Ok(None);
    };
    let dims = dims_of(t);
    let data = tensor_f32(t, dir).with_context(|| format!("node '{label}'"))?;
    let what = if node.op_type == "DiTACLut" {
        "table"
    } else {
        "theta"
    };
    let (rows, cols) = match dims.as_slice() {
        [n] => (1, *n),
        [c, n] => (*c, *n),
        _ => bail!("node '{label}': input '{what}' has shape {dims:?}: expected 1-D or 2-D"),
    };
    let mut consts = vec![pname.to_string()];
    let mut acts = Vec::with_capacity(rows);
    if node.op_type == "DiTACLut" {
        attrs.validate_interval().map_err(ctx)?;
        for r in 0..rows {
            acts.push(
                ditac::Activation::<f32>::from_table(&attrs, &data[r * cols..(r + 1) * cols])
                    .map_err(ctx)?,
            );
        }
    } else {
        if let Some((n, interp)) = lut {
            if attrs.lut_size == 0 {
                attrs.lut_size = n;
                attrs.interpolation = interp;
            }
        }
        attrs.validate().map_err(ctx)?;
        let bname = node.input.get(2).map_or("", String::as_str);
        let basis = if attrs.basis == ditac::BasisKind::Explicit {
            let bt = constant_tensor(g, bname).with_context(|| {
                format!("node '{label}': basis \"explicit\" needs a constant B input")
            })?;
            let bd = dims_of(bt);
            let bv = tensor_f32(bt, dir).with_context(|| format!("node '{label}'"))?;
            if bd.len() != 2 {
                bail!("node '{label}': input 'B' has shape {bd:?}: expected [2·tess, d]");
            }
            consts.push(bname.to_string());
            std::sync::Arc::new(
                ditac::basis::explicit(attrs.tess(), attrs.zero_boundary(), &bv, bd[0], bd[1])
                    .map_err(ctx)?,
            )
        } else {
            if !bname.is_empty() {
                bail!(
                    "node '{label}': input 'B' is given but attribute 'basis' is not \"explicit\""
                );
            }
            ditac::basis::build(attrs.tess(), attrs.zero_boundary(), attrs.basis).map_err(ctx)?
        };
        for r in 0..rows {
            acts.push(
                ditac::Activation::<f32>::from_theta(
                    &attrs,
                    &basis,
                    &data[r * cols..(r + 1) * cols],
                    false,
                )
                .map_err(ctx)?,
            );
        }
    }
    Ok(Some(NodeWarps {
        attrs,
        acts,
        per_channel: dims.len() == 2,
        consts,
    }))
}
