//! Reading and writing model files: a model is parsed straight from the file (one copy of the
//! weights in memory, never the file's bytes and the parsed message both). Initializers stored in
//! external data files stay there: only the tensors a transformation needs (θ, B, tables) are read,
//! and when the output goes to another folder the data files are copied next to it (not hard-linked:
//! onnx.checker refuses data files with several links),
//! so the relative `location`s keep resolving. Outputs are written to a temporary file in the output
//! folder and renamed; on any error nothing is left behind, and the input is never written to.

use super::graph_util::{for_each_graph, for_each_graph_mut};
use anyhow::{anyhow, bail, Context, Result};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::{DataLocation, DataType};
use onnx_protobuf::{AttributeProto, GraphProto, Message, ModelProto, TensorProto};
use protobuf::Enum;
use std::collections::BTreeSet;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

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
        self.save_with(out, false)
    }

    /// Writes `self.model` to `out`; with `keep_external`, external data stays in its files even
    /// when the model would fit in one (see [`save_model_with`]).
    pub fn save_with(&mut self, out: &Path, keep_external: bool) -> Result<()> {
        if same_file(&self.path, out) {
            bail!(
                "the output {} is the input: write to another file (the input is never modified)",
                out.display()
            );
        }
        save_model_with(&mut self.model, &self.dir, out, keep_external)
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

/// Writes `model` to `out` atomically (`OUT.tmp-<pid>` in the same folder, then renamed). Tensors in
/// external data files (relative to `src_dir`) are read into the model when it fits in one file
/// (under 2 GiB), so the output never depends on data files beside it. Zero-valued attribute
/// scalars are put on the wire explicitly (see `crate::model`). On error nothing is left behind.
pub fn save_model(model: &mut ModelProto, src_dir: &Path, out: &Path) -> Result<()> {
    save_model_with(model, src_dir, out, false)
}

/// [`save_model`]; with `keep_external` (and always for a model too large for one file) external
/// data stays in its files, which are copied next to `out` when it goes to another folder.
pub fn save_model_with(
    model: &mut ModelProto,
    src_dir: &Path,
    out: &Path,
    keep_external: bool,
) -> Result<()> {
    fix_zero_scalars(model);
    // Absent or a regular file, not one of the inputs, in an existing folder.
    let output = crate::output::Output::new(out)?;
    let out_dir = output.dir().to_path_buf();
    let mut cleanup = Cleanup(Vec::new());
    // A model that fits in one file gets its external data inline: the output must not depend on
    // data files beside it (the input's, which a re-export overwrites, or a stale one of that name).
    if !keep_external
        && !external_locations(model).is_empty()
        && model.compute_size() + external_size(model) <= PROTOBUF_LIMIT
    {
        inline_external_data(model, src_dir)?;
    }
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

/// Calls `f` on every tensor of the model (initializers and Constant values, subgraphs included).
fn for_each_tensor_mut(
    model: &mut ModelProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<()>,
) -> Result<()> {
    let mut result = Ok(());
    if let Some(g) = model.graph.as_mut() {
        for_each_graph_mut(g, &mut |g| {
            let tensors = g
                .initializer
                .iter_mut()
                .chain(g.node.iter_mut().flat_map(|n| {
                    n.attribute
                        .iter_mut()
                        .flat_map(|a| a.t.as_mut().into_iter().chain(a.tensors.iter_mut()))
                }));
            for t in tensors {
                if result.is_ok() {
                    result = f(t);
                }
            }
        });
    }
    result
}

/// The bytes the model's tensors keep in external data files.
fn external_size(model: &ModelProto) -> u64 {
    let mut total = 0u64;
    let mut add = |t: &TensorProto| {
        if is_external(t) {
            let len = t.external_data.iter().find(|e| e.key == "length");
            total += match len.and_then(|e| e.value.parse::<u64>().ok()) {
                Some(l) => l,
                // Without a length: the size from the dims, at 8 bytes an element (an upper bound).
                None => t.dims.iter().map(|&d| d.max(0) as u64).product::<u64>() * 8,
            };
        }
    };
    if let Some(g) = model.graph.as_ref() {
        for_each_graph(g, &mut |g| {
            g.initializer.iter().for_each(&mut add);
            for n in &g.node {
                for a in &n.attribute {
                    a.t.iter().chain(a.tensors.iter()).for_each(&mut add);
                }
            }
        });
    }
    total
}

/// Reads every externally stored tensor into the model (`raw_data`), relative to `dir`.
pub fn inline_external_data(model: &mut ModelProto, dir: &Path) -> Result<()> {
    for_each_tensor_mut(model, &mut |t| {
        if is_external(t) {
            t.raw_data = external_bytes(t, dir)?;
            t.external_data.clear();
            t.data_location = DataLocation::DEFAULT.into();
        }
        Ok(())
    })
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
