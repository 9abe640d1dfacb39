//! Graph utilities over `onnx_protobuf` messages: walking subgraphs, looking up constants and
//! declared types, making tensors and nodes, fresh names and pruning.

use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{GraphProto, NodeProto, TensorProto, ValueInfoProto};
use std::collections::BTreeSet;

/// Every graph of the model, the main one first, then subgraphs (If/Loop/Scan bodies).
pub(crate) fn for_each_graph_mut(g: &mut GraphProto, f: &mut dyn FnMut(&mut GraphProto)) {
    f(g);
    for n in g.node.iter_mut() {
        for a in n.attribute.iter_mut() {
            if let Some(sg) = a.g.as_mut() {
                for_each_graph_mut(sg, f);
            }
            for sg in a.graphs.iter_mut() {
                for_each_graph_mut(sg, f);
            }
        }
    }
}

pub(crate) fn for_each_graph(g: &GraphProto, f: &mut dyn FnMut(&GraphProto)) {
    f(g);
    for n in &g.node {
        for a in &n.attribute {
            if let Some(sg) = a.g.as_ref() {
                for_each_graph(sg, f);
            }
            for sg in &a.graphs {
                for_each_graph(sg, f);
            }
        }
    }
}

/// A tensor of `dims` with raw little-endian data.
fn make_tensor_raw(name: &str, dims: &[usize], data_type: DataType, raw: Vec<u8>) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.data_type = data_type as i32;
    t.dims = dims.iter().map(|&d| d as i64).collect();
    t.raw_data = raw;
    t
}

/// A float32 tensor with raw data.
pub fn make_tensor_f32(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    make_tensor_raw(name, dims, DataType::FLOAT, raw)
}

/// A float64 tensor with raw data.
pub fn make_tensor_f64(name: &str, dims: &[usize], data: &[f64]) -> TensorProto {
    let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    make_tensor_raw(name, dims, DataType::DOUBLE, raw)
}

/// An int64 tensor with raw data.
pub fn make_tensor_i64(name: &str, dims: &[usize], data: &[i64]) -> TensorProto {
    let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    make_tensor_raw(name, dims, DataType::INT64, raw)
}

/// Where a value comes from, when it is a constant: an initializer that is not a graph input, or the
/// output of a `Constant` node with a tensor `value`.
pub fn constant_tensor<'g>(g: &'g GraphProto, name: &str) -> Option<&'g TensorProto> {
    if name.is_empty() || g.input.iter().any(|i| i.name == name) {
        return None;
    }
    if let Some(t) = g.initializer.iter().find(|t| t.name == name) {
        return Some(t);
    }
    g.node
        .iter()
        .find(|n| {
            n.op_type == "Constant" && n.domain.is_empty() && n.output.iter().any(|o| o == name)
        })
        .and_then(|n| n.attribute.iter().find(|a| a.name == "value"))
        .and_then(|a| a.t.as_ref())
}

/// The shape of a tensor as usize dims.
pub fn dims_of(t: &TensorProto) -> Vec<usize> {
    t.dims.iter().map(|&d| d.max(0) as usize).collect()
}

/// The declared type of a value (graph input, value_info, graph output or initializer).
pub fn value_type(g: &GraphProto, name: &str) -> Option<ValueInfoProto> {
    g.input
        .iter()
        .chain(&g.value_info)
        .chain(&g.output)
        .find(|v| v.name == name && v.type_.is_some())
        .cloned()
}

/// The element type (TensorProto.DataType) of a value, when the graph declares it.
pub fn elem_type(g: &GraphProto, name: &str) -> Option<i32> {
    if let Some(v) = value_type(g, name) {
        if let Some(onnx_protobuf::type_proto::Value::TensorType(t)) = v.type_.value.as_ref() {
            return Some(t.elem_type);
        }
    }
    g.initializer
        .iter()
        .find(|t| t.name == name)
        .map(|t| t.data_type)
}

/// The rank of a value, when the graph declares its shape.
pub fn rank(g: &GraphProto, name: &str) -> Option<usize> {
    let v = value_type(g, name)?;
    match v.type_.value.as_ref()? {
        onnx_protobuf::type_proto::Value::TensorType(t) => t.shape.as_ref().map(|s| s.dim.len()),
        _ => None,
    }
}

/// Every name some node of the model reads (subgraphs included), and the graph outputs.
fn used_names(g: &GraphProto) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for_each_graph(g, &mut |sg| {
        for n in &sg.node {
            used.extend(n.input.iter().cloned());
        }
        used.extend(sg.output.iter().map(|o| o.name.clone()));
    });
    used
}

/// Removes the initializers (and `Constant` nodes) among `candidates` that nothing reads any more.
pub fn prune_unused(g: &mut GraphProto, candidates: &BTreeSet<String>) {
    let used = used_names(g);
    let dead = |name: &String| candidates.contains(name) && !used.contains(name);
    let inputs: BTreeSet<String> = g.input.iter().map(|i| i.name.clone()).collect();
    g.initializer
        .retain(|t| !dead(&t.name) || inputs.contains(&t.name));
    g.node.retain(|n| {
        !(n.op_type == "Constant"
            && n.domain.is_empty()
            && n.output.len() == 1
            && dead(&n.output[0]))
    });
}

/// A value name not yet used in the graph: `base`, or `base_1`, `base_2`, ...
pub fn fresh_name(g: &GraphProto, taken: &mut BTreeSet<String>, base: &str) -> String {
    if taken.is_empty() {
        for_each_graph(g, &mut |sg| {
            taken.extend(sg.initializer.iter().map(|t| t.name.clone()));
            taken.extend(sg.input.iter().map(|t| t.name.clone()));
            taken.extend(sg.output.iter().map(|t| t.name.clone()));
            taken.extend(sg.value_info.iter().map(|t| t.name.clone()));
            for n in &sg.node {
                taken.extend(n.input.iter().cloned());
                taken.extend(n.output.iter().cloned());
                taken.insert(n.name.clone());
            }
        });
    }
    let mut name = base.to_string();
    let mut i = 1;
    while taken.contains(&name) {
        name = format!("{base}_{i}");
        i += 1;
    }
    taken.insert(name.clone());
    name
}

/// A node in the default domain.
pub fn make_node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.to_string();
    n.name = name.to_string();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = outputs.iter().map(|s| s.to_string()).collect();
    n
}
