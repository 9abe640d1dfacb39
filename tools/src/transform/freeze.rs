//! `freeze`: every `DiTAC` node with a constant θ becomes a `DiTACLut` node with the table the
//! plugin would build (`Activation::table_values`), so the frozen model gives bit-identical outputs
//! for float and float16 tensors (double tensors: the plugin's DiTAC builds its table in double, the
//! frozen model holds float32 tables). Tables computed elsewhere (the reference's `lingrid_t`) can
//! be given instead, keyed by node name.

use super::{
    ensure_value_info, fresh_name, is_ditac_node, make_tensor_f32, node_label, node_warps,
    prune_unused,
};
use crate::model::{attribute, lut_attrs};
use crate::onnx::{DITAC, DITAC_LUT};
use crate::params::Params;
use anyhow::{anyhow, bail, Context, Result};
use ditac::core::AttrSet;
use onnx_protobuf::ModelProto;
use std::collections::BTreeSet;
use std::path::Path;

/// What happened to each `DiTAC` node.
#[derive(Debug, Clone, Default)]
pub struct FreezeReport {
    /// Nodes now `DiTACLut` (name, table shape).
    pub frozen: Vec<(String, Vec<usize>)>,
    /// Nodes left as they were, with the reason.
    pub kept: Vec<(String, String)>,
}

/// Freezes the model in place. `dir` is the folder of the model's external data; `tables` maps node
/// names to tables (`[n]`, `[1, n]` or `[C, n]`) that replace the computed ones.
pub fn freeze_model(
    model: &mut ModelProto,
    dir: &Path,
    tables: Option<&Params>,
) -> Result<FreezeReport> {
    let g = model
        .graph
        .as_mut()
        .ok_or_else(|| anyhow!("the model has no graph"))?;
    let mut report = FreezeReport::default();
    if let Some(t) = tables {
        let names: BTreeSet<&str> = g
            .node
            .iter()
            .filter(|n| is_ditac_node(n) && n.op_type == DITAC)
            .map(|n| n.name.as_str())
            .collect();
        for k in t.tensors.keys() {
            if !names.contains(k.as_str()) {
                let have: Vec<&str> = names.iter().copied().collect();
                bail!(
                    "the tables file has \"{k}\", which names no DiTAC node (the model's DiTAC nodes: {})",
                    have.join(", ")
                );
            }
        }
    }
    let mut taken = BTreeSet::new();
    let mut candidates = BTreeSet::new();
    for i in 0..g.node.len() {
        let node = &g.node[i];
        if !(is_ditac_node(node) && node.op_type == DITAC) {
            continue;
        }
        let label = node_label(node);
        let given = tables.and_then(|t| t.tensors.get(&node.name));
        let (attrs, rows, n, values) = if let Some(t) = given {
            super::check_node_io(node)?;
            let (attrs, _) = super::node_attrs(node)?;
            attrs
                .validate_set(AttrSet::Table)
                .map_err(|e| anyhow!("node '{label}': {e}"))?;
            let (rows, n) = match t.shape.as_slice() {
                [n] | [1, n] => (1, *n),
                [c, n] => (*c, *n),
                s => bail!("table \"{label}\" has shape {s:?}: expected [n], [1, n] or [C, n]"),
            };
            if rows == 0 {
                bail!(
                    "table \"{label}\" has shape {:?}: expected at least one row",
                    t.shape
                );
            }
            for r in 0..rows {
                ditac::Activation::<f32>::from_table(&attrs, &t.data[r * n..(r + 1) * n])
                    .map_err(|e| anyhow!("table \"{label}\": {e}"))?;
            }
            if let Some(th) = super::constant_tensor(g, node.input.get(1).map_or("", |s| s)) {
                let th_rows = if th.dims.len() == 2 {
                    th.dims[0] as usize
                } else {
                    1
                };
                if th_rows != rows {
                    bail!("table \"{label}\" has {rows} rows: the node's θ has {th_rows}");
                }
            }
            (attrs, rows, n, t.data.clone())
        } else {
            let Some(w) = node_warps(g, node, dir, None)? else {
                report
                    .kept
                    .push((label, "θ is not a constant (a graph input)".into()));
                continue;
            };
            if w.attrs.lut_size == 0 {
                report.kept.push((
                    label,
                    "lut_size = 0 (the exact closed form has no table)".into(),
                ));
                continue;
            }
            let n = w.attrs.lut_size as usize;
            let rows = w.warps.rows();
            let mut values = Vec::with_capacity(n * rows.len());
            for a in rows {
                values.extend_from_slice(a.table_values().context("a table warp")?);
            }
            let rows = rows.len();
            (w.attrs, rows, n, values)
        };
        let per_channel = rows > 1
            || super::constant_tensor(g, node.input.get(1).map_or("", |s| s))
                .is_some_and(|t| t.dims.len() == 2 && given.is_none());
        let dims = if per_channel { vec![rows, n] } else { vec![n] };
        let base = if node.name.is_empty() {
            format!("{}.table", node.output[0])
        } else {
            format!("{}.table", node.name)
        };
        let tname = fresh_name(g, &mut taken, &base);
        g.initializer.push(make_tensor_f32(&tname, &dims, &values));
        let node = &mut g.node[i];
        candidates.extend(node.input.iter().skip(1).cloned());
        node.op_type = DITAC_LUT.into();
        let x = node.input[0].clone();
        node.input = vec![x, tname];
        node.attribute = lut_attrs(&attrs)
            .iter()
            .map(|(k, v)| attribute(k, v))
            .collect();
        report.frozen.push((label, dims));
    }
    prune_unused(g, &candidates);
    ensure_value_info(g);
    Ok(report)
}
