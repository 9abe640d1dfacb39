//! DiTAC: its backward is the plugin's `ai.ditac.DiTACGrad`, with the forward node's attributes.

use super::{Grads, NodeGrad, Registry};
use crate::model::ModelBuilder;
use crate::onnx::{DITAC, DITAC_DOMAIN, DITAC_GRAD, DITAC_LUT};
use anyhow::{bail, Result};
use onnx_protobuf::NodeProto;

pub fn register(r: &mut Registry) {
    r.insert(DITAC_DOMAIN, DITAC, ditac);
    r.insert(DITAC_DOMAIN, DITAC_LUT, not_trainable);
    r.insert(DITAC_DOMAIN, DITAC_GRAD, not_trainable);
}

fn ditac(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    let n = g.node;
    // DiTACGrad(dY, X, θ[, B]) -> (dX, dθ); the smoothness prior's share of dθ is added by the
    // loss writer.
    let mut ins = vec![g.dy, g.input(0), g.input(1)];
    if let Some(b) = n.input.get(2).filter(|b| !b.is_empty()) {
        ins.push(b);
    }
    let (dx, dth) = (g.name("dx"), g.name("dtheta"));
    let mut node = NodeProto::new();
    node.op_type = DITAC_GRAD.into();
    node.domain = DITAC_DOMAIN.into();
    node.name = g.name(DITAC_GRAD);
    node.input = ins.iter().map(|s| s.to_string()).collect();
    node.output = vec![dx.clone(), dth.clone()];
    node.attribute = n.attribute.clone();
    m.raw_node(node);
    Ok(vec![(0, dx), (1, dth)])
}

fn not_trainable(_: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    bail!(
        "{DITAC_DOMAIN}.{} has no backward (train the {DITAC} node)",
        g.node.op_type
    )
}
