//! `inspect`: the `ai.ditac` nodes of a model (attributes, θ/table shapes, table sizes) and its
//! opset imports, as JSON (`--json`) or text.

use super::{constant_tensor, dims_of, is_ditac_node, is_external, node_attrs, ModelFile};
use crate::model::{basis_str, interpolation_str, variant_str};
use crate::onnx::{Dim, DITAC_LUT};
use anyhow::Result;
use serde_json::{json, Value};

/// An f32 as the shortest decimal that reads back as the same f32 (0.01, not 0.009999999776).
fn f32_json(v: f32) -> Value {
    format!("{v}")
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// What `ditac inspect --json` prints; with `all`, every node's name, op and values too (to find
/// what to `patch`).
pub fn inspect(mf: &ModelFile, all: bool) -> Result<Value> {
    let m = &mf.model;
    let g = mf.graph();
    let opsets: Vec<Value> = m
        .opset_import
        .iter()
        .map(|o| json!({"domain": o.domain, "version": o.version}))
        .collect();
    let mut nodes = Vec::new();
    for n in g.node.iter().filter(|n| is_ditac_node(n)) {
        let (at, set) = node_attrs(n)?;
        let lut = n.op_type == DITAC_LUT;
        let mut attrs = serde_json::Map::new();
        attrs.insert("a".into(), f32_json(at.a));
        attrs.insert("b".into(), f32_json(at.b));
        if !lut {
            attrs.insert("tess".into(), json!(at.tess));
            attrs.insert("zero_boundary".into(), json!(at.zero_boundary));
            attrs.insert("basis".into(), json!(basis_str(at.basis)));
            attrs.insert("lut_size".into(), json!(at.lut_size));
        }
        attrs.insert("variant".into(), json!(variant_str(at.variant)));
        attrs.insert("alpha".into(), f32_json(at.alpha));
        attrs.insert(
            "interpolation".into(),
            json!(interpolation_str(at.interpolation)),
        );
        attrs.insert("channel_axis".into(), json!(at.channel_axis));
        let pname = n.input.get(1).cloned().unwrap_or_default();
        let param = match constant_tensor(g, &pname) {
            Some(t) => json!({
                "name": pname, "shape": dims_of(t), "constant": true, "external": is_external(t)
            }),
            None => {
                let shape = super::value_type(g, &pname)
                    .and_then(|v| crate::onnx::declared_dims(&v))
                    .map(|dims| {
                        dims.iter()
                            .map(|d| match d {
                                Dim::Fixed(v) => json!(v),
                                Dim::Symbolic(p) => json!(p),
                                Dim::Unknown => Value::Null,
                            })
                            .collect::<Vec<_>>()
                    });
                json!({"name": pname, "shape": shape, "constant": false, "external": false})
            }
        };
        let pdims: Vec<usize> = param["shape"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_u64().map(|v| v as usize))
                    .collect()
            })
            .unwrap_or_default();
        let channels = if pdims.len() == 2 {
            Some(pdims[0])
        } else if pdims.len() == 1 {
            Some(1)
        } else {
            None
        };
        let table_size = if lut {
            pdims.last().copied().map(|v| v as i64)
        } else {
            Some(at.lut_size)
        };
        let mut o = json!({
            "name": n.name,
            "op": n.op_type,
            "input": n.input,
            "output": n.output,
            "attributes": attrs,
            "attributes_set": set,
            if lut { "table" } else { "theta" }: param,
            "channels": channels,
            "table_size": table_size,
        });
        if !lut {
            o["d"] = json!(at.theta_len());
            if let Some(b) = n.input.get(2).filter(|s| !s.is_empty()) {
                o["B"] = json!({"name": b, "shape": constant_tensor(g, b).map(dims_of)});
            }
        }
        nodes.push(o);
    }
    let mut out = json!({
        "model": mf.path.display().to_string(),
        "ir_version": m.ir_version,
        "producer": format!("{} {}", m.producer_name, m.producer_version).trim(),
        "opset_import": opsets,
        "graph": {
            "name": g.name,
            "nodes": g.node.len(),
            "initializers": g.initializer.len(),
            "external_data": super::external_locations(m).into_iter().collect::<Vec<_>>(),
        },
        "ditac_nodes": nodes,
    });
    if all {
        out["nodes"] = g
            .node
            .iter()
            .map(|n| {
                json!({"name": n.name, "op": n.op_type, "domain": n.domain,
                       "input": n.input, "output": n.output})
            })
            .collect();
    }
    Ok(out)
}

/// The text form of [`inspect`]'s JSON.
pub fn render_text(v: &Value) -> String {
    let mut s = String::new();
    let opsets: Vec<String> = v["opset_import"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let d = o["domain"].as_str().unwrap_or("");
            format!(
                "{} v{}",
                if d.is_empty() { "ai.onnx" } else { d },
                o["version"]
            )
        })
        .collect();
    s += &format!(
        "{}: IR version {}, producer \"{}\", graph \"{}\" ({} nodes, {} initializers)\n",
        v["model"].as_str().unwrap_or(""),
        v["ir_version"],
        v["producer"].as_str().unwrap_or(""),
        v["graph"]["name"].as_str().unwrap_or(""),
        v["graph"]["nodes"],
        v["graph"]["initializers"]
    );
    s += &format!("opset imports: {}\n", opsets.join(", "));
    if let Some(ext) = v["graph"]["external_data"]
        .as_array()
        .filter(|a| !a.is_empty())
    {
        let e: Vec<&str> = ext.iter().filter_map(|x| x.as_str()).collect();
        s += &format!("external data: {}\n", e.join(", "));
    }
    if let Some(all) = v["nodes"].as_array() {
        s += "nodes:\n";
        for n in all {
            let d = n["domain"].as_str().unwrap_or("");
            let list = |k: &str| -> String {
                n[k].as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            s += &format!(
                "  '{}' {}{}: {} -> {}\n",
                n["name"].as_str().unwrap_or(""),
                if d.is_empty() {
                    String::new()
                } else {
                    format!("{d}.")
                },
                n["op"].as_str().unwrap_or(""),
                list("input"),
                list("output")
            );
        }
    }
    let nodes = v["ditac_nodes"].as_array().cloned().unwrap_or_default();
    s += &format!("{} ai.ditac node(s)\n", nodes.len());
    for n in &nodes {
        let attrs: Vec<String> = n["attributes"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| match v.as_str() {
                Some(t) => format!("{k}={t}"),
                None => format!("{k}={v}"),
            })
            .collect();
        let (pk, pv) = if n.get("table").is_some() {
            ("table", &n["table"])
        } else {
            ("theta", &n["theta"])
        };
        s += &format!(
            "  {} '{}': {} -> {}\n    {}\n    {pk} '{}' shape {} ({}{})",
            n["op"].as_str().unwrap_or(""),
            n["name"].as_str().unwrap_or(""),
            n["input"][0].as_str().unwrap_or(""),
            n["output"][0].as_str().unwrap_or(""),
            attrs.join(" "),
            pv["name"].as_str().unwrap_or(""),
            pv["shape"],
            if pv["constant"] == json!(true) {
                "constant"
            } else {
                "graph input"
            },
            if pv["external"] == json!(true) {
                ", external data"
            } else {
                ""
            },
        );
        if let Some(d) = n.get("d") {
            s += &format!(", d = {d}");
        }
        s += &format!(
            ", channels {}, table size {}\n",
            n["channels"],
            match n["table_size"].as_i64() {
                Some(0) => "0 (exact closed form)".to_string(),
                Some(t) => t.to_string(),
                None => "?".into(),
            }
        );
    }
    s
}
