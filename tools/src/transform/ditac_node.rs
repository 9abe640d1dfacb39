//! What an `ai.ditac` node means: which nodes are DiTAC ops, the value_info and opset import they
//! need, their attributes — read by the core's one reader (`Attrs::read`) through [`NodeAttrs`] — and
//! the warps of a constant θ (or table), built by the core's [`Warps`] exactly as the plugin builds
//! them for float tensors. `freeze`, `lower`, `plot` and `inspect` start here.

use super::graph_util::{constant_tensor, dims_of, value_type};
use super::model_file::tensor_f32;
use crate::model::{DITAC_DOMAIN, DITAC_OPSET};
use crate::onnx::{DITAC, DITAC_GRAD, DITAC_LUT};
use anyhow::{anyhow, bail, Context, Result};
use ditac::core::warps::explicit_basis;
use ditac::core::{basis, AttrSet, AttrSource, Attrs, BasisKind, Interpolation, Warps, WrongType};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
use std::path::Path;
use std::sync::Arc;

/// The op types of the `ai.ditac` domain.
pub const DITAC_OPS: [&str; 3] = [DITAC, DITAC_LUT, DITAC_GRAD];

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

/// Adds value_info for the outputs of `ai.ditac` nodes that have none, with the type and shape
/// of their input X (ops.md: Y has the shape of X).
pub fn ensure_value_info(g: &mut GraphProto) {
    let mut add = Vec::new();
    for n in g.node.iter().filter(|n| is_ditac_node(n)) {
        let pairs: Vec<(&String, &String)> = if n.op_type == DITAC_GRAD {
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

/// A node's attributes as an [`AttrSource`] (the first attribute of each name counts).
pub struct NodeAttrs<'a>(pub &'a NodeProto);

impl NodeAttrs<'_> {
    fn find(&self, name: &str, ty: AttributeType) -> Result<Option<&AttributeProto>, WrongType> {
        let Some(a) = self.0.attribute.iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        match a.type_.enum_value() {
            Ok(t) if t == ty => Ok(Some(a)),
            Ok(t) => Err(WrongType(format!("the node gives it as {t:?}"))),
            Err(t) => Err(WrongType(format!("the node gives it with type code {t}"))),
        }
    }
}

impl AttrSource for NodeAttrs<'_> {
    fn float(&self, name: &'static str) -> Result<Option<f32>, WrongType> {
        Ok(self.find(name, AttributeType::FLOAT)?.map(|a| a.f))
    }
    fn int(&self, name: &'static str) -> Result<Option<i64>, WrongType> {
        Ok(self.find(name, AttributeType::INT)?.map(|a| a.i))
    }
    fn string(&self, name: &'static str) -> Result<Option<String>, WrongType> {
        Ok(self
            .find(name, AttributeType::STRING)?
            .map(|a| String::from_utf8_lossy(&a.s).into_owned()))
    }
}

/// The attributes an op reads: `DiTACLut` those of its table, the others all.
pub fn attr_set(node: &NodeProto) -> AttrSet {
    if node.op_type == DITAC_LUT {
        AttrSet::Table
    } else {
        AttrSet::Warp
    }
}

/// The attributes of an `ai.ditac` node (ops.md defaults for missing ones; types and string values
/// checked, ranges not), and the names of those the node sets.
pub fn node_attrs(node: &NodeProto) -> Result<(Attrs, Vec<String>)> {
    let set = attr_set(node);
    let at = Attrs::parse(&NodeAttrs(node), set)
        .map_err(|e| anyhow!("node '{}': {e}", node_label(node)))?;
    let names = node
        .attribute
        .iter()
        .filter(|a| set.names().contains(&a.name.as_str()))
        .map(|a| a.name.clone())
        .collect();
    Ok((at, names))
}

/// The warps of a `DiTAC` or `DiTACLut` node whose θ (or table) is constant, one per row, as the
/// plugin builds them for float tensors.
pub struct NodeWarps {
    pub attrs: Attrs,
    pub warps: Warps<f32>,
    /// The names of the constant inputs read (θ and B, or the table).
    pub consts: Vec<String>,
}

/// Builds the warps of `node` (a `DiTAC` or `DiTACLut`), or `None` when its θ/table is not a
/// constant. `lut` replaces `lut_size = 0` and the interpolation (the exact path lowered through a
/// table).
pub fn node_warps(
    g: &GraphProto,
    node: &NodeProto,
    dir: &Path,
    lut: Option<(i64, Interpolation)>,
) -> Result<Option<NodeWarps>> {
    let label = node_label(node);
    let ctx = |e: ditac::DitacError| anyhow!("node '{label}': {e}");
    check_node_io(node)?;
    let set = attr_set(node);
    let mut attrs = Attrs::parse(&NodeAttrs(node), set).map_err(ctx)?;
    let pname = node.input.get(1).map_or("", String::as_str);
    let Some(t) = constant_tensor(g, pname) else {
        let what = if set == AttrSet::Table {
            "table"
        } else {
            "theta"
        };
        if pname.is_empty() {
            bail!("node '{label}': input '{what}' is missing");
        }
        let produced = g.input.iter().any(|i| i.name == pname)
            || g.node.iter().any(|n| n.output.iter().any(|o| o == pname));
        if !produced {
            bail!(
                "node '{label}': input '{what}' names \"{pname}\", which is no initializer, graph input or node output"
            );
        }
        return Ok(None);
    };
    if let Some((n, interp)) = lut {
        if set == AttrSet::Warp && attrs.lut_size == 0 {
            attrs.lut_size = n;
            attrs.interpolation = interp;
        }
    }
    attrs.validate_set(set).map_err(ctx)?;
    let dims = dims_of(t);
    let data = tensor_f32(t, dir).with_context(|| format!("node '{label}'"))?;
    let mut consts = vec![pname.to_string()];
    let max_bytes = crate::budget::max_bytes()?;
    let warps = if set == AttrSet::Table {
        Warps::from_table_within(&attrs, &dims, &data, max_bytes).map_err(ctx)?
    } else {
        let bname = node.input.get(2).map_or("", String::as_str);
        let basis = match (attrs.basis, bname.is_empty()) {
            (BasisKind::Explicit, true) => return Err(ctx(attrs.missing_basis())),
            (BasisKind::Explicit, false) => {
                let bt = constant_tensor(g, bname).with_context(|| {
                    format!("node '{label}': basis \"explicit\" needs a constant B input ('{bname}' is not)")
                })?;
                let bv = tensor_f32(bt, dir).with_context(|| format!("node '{label}'"))?;
                consts.push(bname.to_string());
                Arc::new(explicit_basis(&attrs, &dims_of(bt), &bv).map_err(ctx)?)
            }
            (_, false) => return Err(ctx(attrs.basis_not_explicit())),
            (kind, true) => basis::build(attrs.tess(), attrs.zero_boundary(), kind).map_err(ctx)?,
        };
        Warps::from_theta_within(&attrs, &basis, &dims, &data, false, max_bytes).map_err(ctx)?
    };
    Ok(Some(NodeWarps {
        attrs,
        warps,
        consts,
    }))
}

/// Checks that an `ai.ditac` node has its X input and its output named.
pub fn check_node_io(node: &NodeProto) -> Result<()> {
    let label = node_label(node);
    if node.input.first().is_none_or(|x| x.is_empty()) {
        bail!("node '{label}': input 'X' is missing");
    }
    if node.output.first().is_none_or(|y| y.is_empty()) {
        bail!("node '{label}': output 'Y' is missing");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(name: &str, ty: AttributeType) -> AttributeProto {
        let mut a = AttributeProto::new();
        a.name = name.into();
        a.type_ = ty.into();
        a
    }

    #[test]
    fn node_attributes_go_through_the_core_reader() {
        let mut n = NodeProto::new();
        n.name = "act1".into();
        n.op_type = "DiTAC".into();
        let mut tess = attr("tess", AttributeType::INT);
        tess.i = 6;
        let mut variant = attr("variant", AttributeType::STRING);
        variant.s = b"ge".to_vec();
        n.attribute = vec![tess, variant];
        let (at, set) = node_attrs(&n).unwrap();
        assert_eq!((at.tess, at.variant), (6, ditac::Variant::Ge));
        assert_eq!(set, ["tess", "variant"]);
        // The type is checked, with the core's message.
        n.attribute.push(attr("a", AttributeType::INT));
        let e = node_attrs(&n).unwrap_err().to_string();
        assert!(
            e.starts_with("node 'act1': attribute 'a' has no float value: expected an attribute of type float (the node gives it as INT)"),
            "{e}"
        );
        // A table op does not read the warp's attributes.
        n.op_type = "DiTACLut".into();
        n.attribute.pop();
        let (_, set) = node_attrs(&n).unwrap();
        assert_eq!(set, ["variant"]);
    }
}
