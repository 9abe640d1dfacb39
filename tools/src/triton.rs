//! The Triton Inference Server model repository of a DiTAC model (`ditac triton MODEL.onnx -o REPO`).
//!
//! Two models are added to REPO (created if missing):
//! - `NAME`: served by Triton's Python backend, `model.py` (tools/triton/model.py) running an ONNX
//!   Runtime session with the plugin; the wheel-packaged `tritonserver` of PyPI's `nvidia-pytriton`
//!   has only this backend (`tools/triton/serve.sh`).
//! - `NAME_onnxruntime`: the same model for Triton's native ONNX Runtime backend
//!   (`platform: "onnxruntime_onnx"`, the plugin through `model_operations`), for servers that have it.
//!
//! Inputs, outputs, element types and dims are read from the model's graph. A model is batched
//! (`max_batch_size` > 0, dynamic batching) when the first dimension of every input and output is
//! symbolic. The plugin is copied into each model folder. Both model folders are written in full
//! under temporary names inside REPO ([`crate::output::OutputDir`]), then renamed: an error while
//! writing leaves REPO as it was.

use crate::output::OutputDir;
use crate::transform::{save_model, ModelFile};
use anyhow::{bail, Context, Result};
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{type_proto, GraphProto, ValueInfoProto};
use protobuf::Enum;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The Python-backend model, written as `NAME/1/model.py`.
const MODEL_PY: &str = include_str!("../triton/model.py");

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NativeDevice {
    /// Instances on the GPUs where the server has them, else on the CPU (KIND_AUTO).
    Auto,
    /// CPU instances (CPU execution provider).
    Cpu,
    /// GPU instances (CUDA execution provider; the plugin's CUDA kernels).
    Gpu,
}

/// What `ditac triton` writes (the command's flags; the plugin's path is resolved by the command).
pub struct TritonSettings {
    /// The DiTAC model (never modified).
    pub input: PathBuf,
    /// The model repository (created if missing; other models in it are left alone).
    pub out: PathBuf,
    /// The model's name in Triton (None: the file name without .onnx).
    pub name: Option<String>,
    /// Triton's max_batch_size (0: no batching).
    pub max_batch: u32,
    /// Model instances.
    pub instances: u32,
    /// Batch sizes the dynamic batcher prefers to form.
    pub preferred_batch: Vec<u32>,
    /// How long the dynamic batcher may hold a request (microseconds).
    pub max_queue_delay_us: u64,
    /// ONNX Runtime intra-op threads per instance.
    pub threads: u32,
    /// The plugin's path on the server for the native backend (None: the copy in the repository).
    pub op_library: Option<String>,
    /// Where the native backend's instances run.
    pub native_device: NativeDevice,
    /// Replace the models when the repository already holds them.
    pub force: bool,
}

/// One input or output as Triton declares it.
#[derive(Debug, Clone, PartialEq)]
struct Tensor {
    name: String,
    triton_type: &'static str,
    /// The ONNX shape; None where the dimension is symbolic or unknown.
    shape: Vec<Option<i64>>,
}

fn triton_type(elem_type: i32) -> Option<&'static str> {
    Some(match DataType::from_i32(elem_type)? {
        DataType::FLOAT => "TYPE_FP32",
        DataType::FLOAT16 => "TYPE_FP16",
        DataType::DOUBLE => "TYPE_FP64",
        DataType::INT8 => "TYPE_INT8",
        DataType::INT16 => "TYPE_INT16",
        DataType::INT32 => "TYPE_INT32",
        DataType::INT64 => "TYPE_INT64",
        DataType::UINT8 => "TYPE_UINT8",
        DataType::UINT16 => "TYPE_UINT16",
        DataType::UINT32 => "TYPE_UINT32",
        DataType::UINT64 => "TYPE_UINT64",
        DataType::BOOL => "TYPE_BOOL",
        _ => return None,
    })
}

fn tensor_of(v: &ValueInfoProto, what: &str) -> Result<Tensor> {
    let Some(type_proto::Value::TensorType(t)) = v.type_.as_ref().and_then(|t| t.value.as_ref())
    else {
        bail!(
            "{what} {:?} is not a tensor (or has no declared type)",
            v.name
        );
    };
    let ty = triton_type(t.elem_type).with_context(|| {
        let name = DataType::from_i32(t.elem_type)
            .map(|d| format!("{d:?}"))
            .unwrap_or_else(|| t.elem_type.to_string());
        format!("{what} {:?} has element type {name}: Triton's Python backend takes bool, integers, float16, float and double", v.name)
    })?;
    let Some(dims) = crate::onnx::declared_dims(v) else {
        bail!("{what} {:?} has no declared shape", v.name);
    };
    let shape = dims.iter().map(|d| d.fixed().map(|n| n as i64)).collect();
    Ok(Tensor {
        name: v.name.clone(),
        triton_type: ty,
        shape,
    })
}

/// The graph's inputs (those that are not initializers) and outputs.
fn signature(g: &GraphProto) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
    let inits: BTreeSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = g
        .input
        .iter()
        .filter(|v| !inits.contains(v.name.as_str()))
        .map(|v| tensor_of(v, "input"))
        .collect::<Result<Vec<_>>>()?;
    let outputs = g
        .output
        .iter()
        .map(|v| tensor_of(v, "output"))
        .collect::<Result<Vec<_>>>()?;
    if inputs.is_empty() || outputs.is_empty() {
        bail!("the model has no inputs or no outputs to serve");
    }
    Ok((inputs, outputs))
}

/// Triton's dims for a tensor: without the batch dimension when batching; -1 where symbolic.
fn triton_dims(t: &Tensor, batching: bool, what: &str) -> Result<Vec<i64>> {
    let dims: Vec<i64> = t.shape.iter().map(|d| d.unwrap_or(-1)).collect();
    if !batching {
        return Ok(dims);
    }
    match t.shape.first() {
        None => bail!("{what} {:?} is a scalar: it cannot be batched (use --max-batch 0)", t.name),
        Some(Some(n)) => bail!(
            "{what} {:?} has the fixed first dimension {n}: Triton batches along a symbolic first dimension (use --max-batch 0, or export the model with a dynamic batch)",
            t.name
        ),
        Some(None) if dims.len() == 1 => bail!(
            "{what} {:?} has rank 1: with batching each sample would be a scalar (use --max-batch 0)",
            t.name
        ),
        Some(None) => Ok(dims[1..].to_vec()),
    }
}

/// A protobuf text-format string literal.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn tensor_block(key: &str, ts: &[(Tensor, Vec<i64>)]) -> String {
    let mut s = format!("{key} [\n");
    for (i, (t, dims)) in ts.iter().enumerate() {
        let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        let _ = write!(
            s,
            "  {{\n    name: {}\n    data_type: {}\n    dims: [ {} ]\n  }}{}\n",
            quoted(&t.name),
            t.triton_type,
            dims.join(", "),
            if i + 1 < ts.len() { "," } else { "" }
        );
    }
    s.push_str("]\n");
    s
}

fn parameter(key: &str, value: &str) -> String {
    format!(
        "parameters {{\n  key: {}\n  value: {{ string_value: {} }}\n}}\n",
        quoted(key),
        quoted(value)
    )
}

/// What both configs share: name, batching, inputs, outputs, instances.
struct Common {
    max_batch: u32,
    inputs: Vec<(Tensor, Vec<i64>)>,
    outputs: Vec<(Tensor, Vec<i64>)>,
    preferred_batch: Vec<u32>,
    max_queue_delay_us: u64,
    instances: u32,
}

impl Common {
    fn head(&self, name: &str, backend_line: &str) -> String {
        let mut s = format!(
            "name: {}\n{backend_line}\nmax_batch_size: {}\n",
            quoted(name),
            self.max_batch
        );
        s.push_str(&tensor_block("input", &self.inputs));
        s.push_str(&tensor_block("output", &self.outputs));
        if self.max_batch > 0 {
            s.push_str("dynamic_batching {\n");
            if !self.preferred_batch.is_empty() {
                let p: Vec<String> = self.preferred_batch.iter().map(|b| b.to_string()).collect();
                let _ = writeln!(s, "  preferred_batch_size: [ {} ]", p.join(", "));
            }
            let _ = writeln!(
                s,
                "  max_queue_delay_microseconds: {}\n}}",
                self.max_queue_delay_us
            );
        }
        s
    }
}

fn python_config(c: &Common, name: &str, threads: u32) -> String {
    let mut s = c.head(name, "backend: \"python\"");
    let _ = writeln!(
        s,
        "instance_group [\n  {{\n    count: {}\n    kind: KIND_CPU\n  }}\n]",
        c.instances
    );
    s.push_str(&parameter("ditac_plugin", "libditac.so"));
    s.push_str(&parameter("intra_op_threads", &threads.to_string()));
    s
}

fn native_config(
    c: &Common,
    name: &str,
    threads: u32,
    op_library: &str,
    device: NativeDevice,
) -> String {
    let mut s = c.head(name, "platform: \"onnxruntime_onnx\"");
    let kind = match device {
        NativeDevice::Auto => "KIND_AUTO",
        NativeDevice::Cpu => "KIND_CPU",
        NativeDevice::Gpu => "KIND_GPU",
    };
    let _ = writeln!(
        s,
        "instance_group [\n  {{\n    count: {}\n    kind: {kind}\n  }}\n]",
        c.instances
    );
    // The backend registers the custom-op library in every session it creates; on GPU instances
    // it adds the CUDA execution provider, where the plugin registers its CUDA kernels.
    let _ = writeln!(
        s,
        "model_operations {{\n  op_library_filename: [ {} ]\n}}",
        quoted(op_library)
    );
    s.push_str(&parameter("intra_op_thread_count", &threads.to_string()));
    s.push_str(&parameter("inter_op_thread_count", "1"));
    s
}

/// Writes one model folder (config, version 1 with the model, the plugin copy, and `extra` files in
/// the version folder) under a temporary name in `repo`; moved into place by its `commit`.
fn prepare_model_dir(
    repo: &Path,
    name: &str,
    config: &str,
    mf: &mut ModelFile,
    plugin: &Path,
    extra: &[(&str, &str)],
) -> Result<OutputDir> {
    let dir = OutputDir::new(repo, name)?;
    let version = dir.create_dir("1")?;
    dir.write("config.pbtxt", config.as_bytes())?;
    dir.copy_in(plugin, "libditac.so")
        .with_context(|| format!("copying the plugin {}", plugin.display()))?;
    let src = mf.dir.clone();
    save_model(&mut mf.model, &src, &version.join("model.onnx"))?;
    for (file, text) in extra {
        dir.write(&format!("1/{file}"), text.as_bytes())?;
    }
    Ok(dir)
}

/// Writes the two model folders of `args.input` into the repository `args.out`, with a copy of
/// `plugin`; returns the summary to print.
pub fn write_repository(args: &TritonSettings, plugin: &Path) -> Result<String> {
    let name = match &args.name {
        Some(n) => n.clone(),
        None => args
            .input
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .context("the model path has no file name: give --name")?,
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        || name.starts_with('.')
    {
        bail!("--name {name:?}: use letters, digits, '_', '-' and '.' (not first)");
    }
    if args.instances == 0 || args.threads == 0 {
        bail!("--instances and --threads must be at least 1");
    }
    if let Some(&b) = args
        .preferred_batch
        .iter()
        .find(|&&b| b == 0 || b > args.max_batch)
    {
        bail!(
            "--preferred-batch {b}: expected 1..={} (--max-batch)",
            args.max_batch
        );
    }
    if !plugin.is_file() {
        bail!(
            "no plugin at {}: build it (cargo build --release -p ditac --lib) or pass --plugin",
            plugin.display()
        );
    }

    let mut mf = ModelFile::load(&args.input)?;
    let (inputs, outputs) = signature(mf.graph())?;
    let batching = args.max_batch > 0;
    let with_dims = |ts: Vec<Tensor>, what: &str| -> Result<Vec<(Tensor, Vec<i64>)>> {
        ts.into_iter()
            .map(|t| {
                let d = triton_dims(&t, batching, what)?;
                Ok((t, d))
            })
            .collect()
    };
    let common = Common {
        max_batch: args.max_batch,
        inputs: with_dims(inputs, "input")?,
        outputs: with_dims(outputs, "output")?,
        preferred_batch: args.preferred_batch.clone(),
        max_queue_delay_us: args.max_queue_delay_us,
        instances: args.instances,
    };

    crate::output::output_folder(&args.out)?;
    let repo = std::fs::canonicalize(&args.out)
        .with_context(|| format!("cannot resolve {}", args.out.display()))?;
    let native_name = format!("{name}_onnxruntime");
    let op_library = match &args.op_library {
        Some(p) => p.clone(),
        None => repo
            .join(&native_name)
            .join("libditac.so")
            .to_string_lossy()
            .into_owned(),
    };

    let py = python_config(&common, &name, args.threads);
    let native = native_config(
        &common,
        &native_name,
        args.threads,
        &op_library,
        args.native_device,
    );
    // Both folders are checked before either is written. A folder that --force would replace must
    // not hold one of the inputs (the command never writes to, or removes, its inputs).
    let inputs = [args.input.as_path(), plugin];
    for n in [&name, &native_name] {
        let dest = repo.join(n);
        if dest.exists() && !args.force {
            bail!(
                "{} already exists (use --force to replace it)",
                dest.display()
            );
        }
        for input in inputs {
            if std::fs::canonicalize(input).is_ok_and(|p| p.starts_with(&dest)) {
                bail!(
                    "{} is inside {}, which this command replaces: write the repository elsewhere",
                    input.display(),
                    dest.display()
                );
            }
        }
    }
    // Both folders are written in full before either is moved into place.
    let py_dir = prepare_model_dir(
        &repo,
        &name,
        &py,
        &mut mf,
        plugin,
        &[("model.py", MODEL_PY)],
    )?;
    let native_dir = prepare_model_dir(&repo, &native_name, &native, &mut mf, plugin, &[])?;
    py_dir.commit()?;
    native_dir.commit()?;
    let shapes = |ts: &[(Tensor, Vec<i64>)]| -> String {
        ts.iter()
            .map(|(t, d)| format!("{} {} {d:?}", t.name, t.triton_type))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    writeln!(
        out,
        "{name}: Python backend (ONNX Runtime with the plugin), max_batch_size {}, {} instance(s) × {} thread(s)",
        args.max_batch, args.instances, args.threads
    )?;
    writeln!(out, "  inputs: {}", shapes(&common.inputs))?;
    writeln!(out, "  outputs: {}", shapes(&common.outputs))?;
    writeln!(
        out,
        "{native_name}: native onnxruntime backend, op library {op_library}"
    )?;
    writeln!(out, "wrote {}", repo.display())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[Option<i64>]) -> Tensor {
        Tensor {
            name: "x".into(),
            triton_type: "TYPE_FP32",
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn dims_drop_a_symbolic_batch() {
        assert_eq!(
            triton_dims(&t(&[None, Some(3), None]), true, "input").unwrap(),
            vec![3, -1]
        );
        assert_eq!(
            triton_dims(&t(&[Some(4), Some(3)]), false, "input").unwrap(),
            vec![4, 3]
        );
        let e = triton_dims(&t(&[Some(4), Some(3)]), true, "input").unwrap_err();
        assert!(e.to_string().contains("fixed first dimension 4"), "{e}");
    }

    #[test]
    fn names_are_quoted() {
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
