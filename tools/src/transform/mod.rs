//! Graph transformations of ONNX models that hold `ai.ditac` nodes, on `onnx_protobuf::ModelProto`:
//! [`patch`] (a named node becomes `DiTAC` with a given θ), [`freeze`] (`DiTAC` with a constant θ
//! becomes `DiTACLut` with its table), [`lower`] (`DiTAC`/`DiTACLut` become standard ONNX operators),
//! [`inspect`] (what the ai.ditac nodes are) and [`plot`] (pictures of the learned activations).
//! The `ditac` binary's `patch`, `freeze`, `lower`, `inspect` and `plot` commands are thin wrappers.
//!
//! Reading and writing ([`ModelFile`]): a model is parsed straight from the file (one copy of the
//! weights in memory, never the file's bytes and the parsed message both). Initializers stored in
//! external data files stay there: only the tensors a transformation needs (θ, B, tables) are read,
//! and when the output goes to another folder the data files are copied next to it (not hard-linked:
//! onnx.checker refuses data files with several links),
//! so the relative `location`s keep resolving. Outputs are written to a temporary file in the output
//! folder and renamed; on any error nothing is left behind, and the input is never written to.

pub mod freeze;
pub mod inspect;
pub mod lower;
pub mod node;
pub mod patch;
pub mod plot;

pub use node::{node_attrs, node_warps, NodeAttrs, NodeWarps};

use crate::model::{DITAC_DOMAIN, DITAC_OPSET};
use anyhow::{anyhow, bail, Context, Result};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::{DataLocation, DataType};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto,
};
use protobuf::Enum;
use std::collections::BTreeSet;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The op types of the `ai.ditac` domain.
pub const DITAC_OPS: [&str; 3] = ["DiTAC", "DiTACLut", "DiTACGrad"];

/// Protobuf's limit on one serialised message: larger models must keep their weights in external
/// data files.
pub const PROTOBUF_LIMIT: u64 = (1 << 31) - 1;

/// A model read from a file, with the folder its external data paths are relative to.
#[derive(Debug, Clone)]
pub struct ModelFile {
    pub model: ModelProto,
    pub path: PathBuf,
    /// The folder external data `location`s are relative to.
    pub dir: PathBuf,
}

impl ModelFile {
    /// Parses `path` as an ONNX model (streamed from the file: one copy in memory).
    pub fn load(path: &Path) -> Result<ModelFile> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            bail!("{} is a folder, not an ONNX model", path.display());
        }
        if meta.len() > PROTOBUF_LIMIT {
            bail!(
                "{} is {} bytes: protobuf cannot hold more than 2 GiB in one file (keep the weights in external data files)",
                path.display(),
                meta.len()
            );
        }
        let file = crate::output::open_input(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut r = BufReader::with_capacity(1 << 20, file);
        let model = ModelProto::parse_from_reader(&mut r)
            .map_err(|e| anyhow!("{} is not an ONNX model ({e})", path.display()))?;
        if model.ir_version <= 0 || model.graph.is_none() {
            bail!(
                "{} is not an ONNX model (no IR version or no graph)",
                path.display()
            );
        }
        let dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."));
        // The model's external data files are inputs too: no output may replace them.
        for loc in external_locations(&model) {
            crate::output::record_input(&dir.join(loc));
        }
        Ok(ModelFile {
            model,
            path: path.to_path_buf(),
            dir,
        })
    }

    pub fn graph(&self) -> &GraphProto {
        self.model.graph.as_ref().expect("checked at load")
    }

    /// Writes `self.model` to `out` (see [`save_model`]).
    pub fn save(&mut self, out: &Path) -> Result<()> {
        if same_file(&self.path, out) {
            bail!(
                "the output {} is the input: write to another file (the input is never modified)",
                out.display()
            );
        }
        save_model(&mut self.model, &self.dir, out)
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Removes what it holds when dropped, unless disarmed: temporary outputs on error paths.
struct Cleanup(Vec<PathBuf>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes `model` to `out` atomically (`OUT.tmp-<pid>` in the same folder, then renamed); external
/// data files named by its initializers (relative to `src_dir`) are copied next to
/// `out` when it goes to another folder. Zero-valued attribute scalars are put on the wire
/// explicitly (see `crate::model`). On error nothing is left behind.
pub fn save_model(model: &mut ModelProto, src_dir: &Path, out: &Path) -> Result<()> {
    fix_zero_scalars(model);
    // Absent or a regular file, not one of the inputs, in an existing folder.
    let output = crate::output::Output::new(out)?;
    let out_dir = output.dir().to_path_buf();
    let mut cleanup = Cleanup(Vec::new());
    let relocate = !same_file(src_dir, &out_dir);
    if relocate {
        for loc in external_locations(model) {
            let rel = Path::new(&loc);
            if rel.is_absolute() {
                continue;
            }
            let src = src_dir.join(rel);
            // Inside the output's folder (no `..`, no folder resolving elsewhere).
            let dst = output.confined(rel)?;
            if !src.is_file() {
                bail!(
                    "external data file {} (location \"{loc}\") not found",
                    src.display()
                );
            }
            if let Ok(m) = std::fs::symlink_metadata(&dst) {
                if !m.file_type().is_file() {
                    bail!(
                        "{} exists and is not a regular file: not replacing it with the model's external data",
                        dst.display()
                    );
                }
                if same_file(&src, &dst) || same_content(&src, &dst)? {
                    continue;
                }
                bail!(
                    "{} exists and differs from the model's external data {}: not overwriting it",
                    dst.display(),
                    src.display()
                );
            }
            // A copy, not a hard link: onnx.checker refuses data files with several links
            // ("potential hardlink attack").
            crate::output::Output::new(&dst)?.write_with(|w| {
                let mut f = std::fs::File::open(&src)
                    .with_context(|| format!("cannot read {}", src.display()))?;
                std::io::copy(&mut f, w)
                    .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
                Ok(())
            })?;
            cleanup.0.push(dst);
        }
    }
    let size = model.compute_size();
    if size > PROTOBUF_LIMIT {
        bail!("the output model would be {size} bytes: protobuf cannot hold more than 2 GiB (keep the weights in external data files)");
    }
    output.write_with(|w| {
        model
            .write_to_writer(w)
            .map_err(|e| anyhow!("writing {}: {e}", out.display()))
    })?;
    cleanup.0.clear();
    Ok(())
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let (ma, mb) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (
        BufReader::new(std::fs::File::open(a)?),
        BufReader::new(std::fs::File::open(b)?),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Every graph of the model, the main one first, then subgraphs (If/Loop/Scan bodies).
fn for_each_graph_mut(g: &mut GraphProto, f: &mut dyn FnMut(&mut GraphProto)) {
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

fn for_each_graph(g: &GraphProto, f: &mut dyn FnMut(&GraphProto)) {
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

/// Puts zero-valued attribute scalars (`f`, `i`, `s`) on the wire explicitly: the proto3 code of
/// `onnx-protobuf` drops them, and ONNX Runtime would then see a valueless attribute.
pub fn fix_zero_scalars(model: &mut ModelProto) {
    fn fix(a: &mut AttributeProto) {
        let unknown = a.special_fields.unknown_fields();
        let has = |n: u32| unknown.get(n).is_some();
        match a.type_.enum_value() {
            Ok(AttributeType::FLOAT) if a.f == 0.0 && !has(2) => {
                let bits = a.f.to_bits();
                a.special_fields.mut_unknown_fields().add_fixed32(2, bits);
            }
            Ok(AttributeType::INT) if a.i == 0 && !has(3) => {
                a.special_fields.mut_unknown_fields().add_varint(3, 0);
            }
            Ok(AttributeType::STRING) if a.s.is_empty() && !has(4) => {
                a.special_fields
                    .mut_unknown_fields()
                    .add_length_delimited(4, Vec::new());
            }
            _ => {}
        }
    }
    if let Some(g) = model.graph.as_mut() {
        for_each_graph_mut(g, &mut |g| {
            for n in g.node.iter_mut() {
                n.attribute.iter_mut().for_each(fix);
            }
        });
    }
}

/// The external data files the model's tensors name (initializers and Constant values).
pub fn external_locations(model: &ModelProto) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |t: &TensorProto| {
        if is_external(t) {
            if let Some(e) = t.external_data.iter().find(|e| e.key == "location") {
                out.insert(e.value.clone());
            }
        }
    };
    if let Some(g) = model.graph.as_ref() {
        for_each_graph(g, &mut |g| {
            g.initializer.iter().for_each(&mut add);
            for n in &g.node {
                for a in &n.attribute {
                    if let Some(t) = a.t.as_ref() {
                        add(t);
                    }
                    a.tensors.iter().for_each(&mut add);
                }
            }
        });
    }
    out
}

pub fn is_external(t: &TensorProto) -> bool {
    t.data_location.enum_value() == Ok(DataLocation::EXTERNAL)
}

/// The raw little-endian bytes of a tensor stored in an external data file (relative to `dir`).
fn external_bytes(t: &TensorProto, dir: &Path) -> Result<Vec<u8>> {
    let get = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| &e.value)
    };
    let loc = get("location")
        .with_context(|| format!("tensor \"{}\" is external but has no \"location\"", t.name))?;
    let num = |k: &str| -> Result<Option<u64>> {
        get(k)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    anyhow!(
                        "tensor \"{}\": external data {k} \"{v}\" is not a number",
                        t.name
                    )
                })
            })
            .transpose()
    };
    let path = dir.join(loc);
    let mut f = crate::output::open_input(&path).with_context(|| {
        format!(
            "tensor \"{}\": cannot read its external data file {}",
            t.name,
            path.display()
        )
    })?;
    let offset = num("offset")?.unwrap_or(0);
    let file_len = f.metadata()?.len();
    let len = match num("length")? {
        Some(l) => l,
        None => file_len.saturating_sub(offset),
    };
    if offset.checked_add(len).is_none_or(|e| e > file_len) {
        bail!(
            "tensor \"{}\": external data {} is {file_len} bytes, shorter than offset {offset} + length {len}",
            t.name,
            path.display()
        );
    }
    f.seek(SeekFrom::Start(offset))?;
    let what = format!("tensor \"{}\": external data", t.name);
    let mut buf = crate::budget::try_vec(&what, usize::try_from(len)?, 0u8)?;
    f.read_exact(&mut buf)
        .with_context(|| format!("tensor \"{}\": reading {}", t.name, path.display()))?;
    Ok(buf)
}

/// The values of a float, double or float16 tensor as f32 (external data read from `dir`).
pub fn tensor_f32(t: &TensorProto, dir: &Path) -> Result<Vec<f32>> {
    let what = format!("tensor \"{}\"", t.name);
    let n = crate::budget::elements(&what, &t.dims)?;
    crate::budget::check_values(&what, Some(n as u128), 4)?;
    let external;
    let raw: &[u8] = if is_external(t) {
        external = external_bytes(t, dir)?;
        &external
    } else {
        &t.raw_data
    };
    let dt = DataType::from_i32(t.data_type);
    let v: Vec<f32> = match dt {
        Some(DataType::FLOAT) if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Some(DataType::FLOAT) => t.float_data.clone(),
        Some(DataType::DOUBLE) if !raw.is_empty() => raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Some(DataType::DOUBLE) => t.double_data.iter().map(|&v| v as f32).collect(),
        Some(DataType::FLOAT16) if !raw.is_empty() => raw
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32())
            .collect(),
        Some(DataType::FLOAT16) => t
            .int32_data
            .iter()
            .map(|&v| half::f16::from_bits(v as u16).to_f32())
            .collect(),
        _ => bail!(
            "tensor \"{}\" has data type {}: expected float, double or float16",
            t.name,
            t.data_type
        ),
    };
    if v.len() != n {
        bail!(
            "tensor \"{}\" holds {} values for dims {:?}",
            t.name,
            v.len(),
            t.dims
        );
    }
    Ok(v)
}

/// A float32 tensor with raw data.
pub fn make_tensor_f32(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.data_type = DataType::FLOAT as i32;
    t.dims = dims.iter().map(|&d| d as i64).collect();
    t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

/// An int64 tensor with raw data.
pub fn make_tensor_i64(name: &str, dims: &[usize], data: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.data_type = DataType::INT64 as i32;
    t.dims = dims.iter().map(|&d| d as i64).collect();
    t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

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
