//! `ditac triton MODEL.onnx -o REPO`: a Triton Inference Server model repository for a DiTAC model
//! (written by [`ditac_tools::triton`]).

use anyhow::Result;
use clap::Args as ClapArgs;
use ditac_tools::runtime::PluginFlag;
use ditac_tools::triton::{NativeDevice, TritonSettings};
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// The DiTAC model (never modified).
    pub input: PathBuf,
    /// The model repository (created if missing; other models in it are left alone).
    #[arg(short, long)]
    pub out: PathBuf,
    /// The model's name in Triton (default: the file name without .onnx).
    #[arg(long)]
    pub name: Option<String>,
    /// Triton's max_batch_size: the largest batch one request (or one dynamic batch) may hold.
    /// 0: no batching (the dims are the model's full shapes).
    #[arg(long, default_value_t = 32, help_heading = "Batching and instances")]
    pub max_batch: u32,
    /// Model instances (each its own ONNX Runtime session; a process each in the Python backend).
    #[arg(long, default_value_t = 1, help_heading = "Batching and instances")]
    pub instances: u32,
    /// Batch sizes the dynamic batcher prefers to form, e.g. 8,32 (default: none).
    #[arg(long, value_delimiter = ',', help_heading = "Batching and instances")]
    pub preferred_batch: Vec<u32>,
    /// How long the dynamic batcher may hold a request to form a larger batch (microseconds).
    #[arg(long, default_value_t = 100, help_heading = "Batching and instances")]
    pub max_queue_delay_us: u64,
    /// ONNX Runtime intra-op threads per instance.
    #[arg(long, default_value_t = 1, help_heading = "Batching and instances")]
    pub threads: u32,
    // The plugin library to copy into the repository.
    #[command(flatten)]
    pub plugin: PluginFlag,
    /// The plugin's path on the server, for the native backend's model_operations (default: the
    /// absolute path of the copy in REPO/NAME_onnxruntime). Set it where the repository is
    /// mounted elsewhere, e.g. /opt/ditac/libditac.so in a container image.
    #[arg(long, help_heading = "Native ONNX Runtime backend")]
    pub op_library: Option<String>,
    /// Where the native backend's instances run.
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        help_heading = "Native ONNX Runtime backend"
    )]
    pub native_device: NativeDevice,
    /// Replace NAME and NAME_onnxruntime when REPO already holds them.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args) -> Result<()> {
    let plugin = super::runtime::plugin(&args.plugin)?;
    let settings = TritonSettings {
        input: args.input,
        out: args.out,
        name: args.name,
        max_batch: args.max_batch,
        instances: args.instances,
        preferred_batch: args.preferred_batch,
        max_queue_delay_us: args.max_queue_delay_us,
        threads: args.threads,
        op_library: args.op_library,
        native_device: args.native_device,
        force: args.force,
    };
    print!(
        "{}",
        ditac_tools::triton::write_repository(&settings, &plugin)?
    );
    Ok(())
}
