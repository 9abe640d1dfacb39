//! `ditac build SPEC -o OUT.onnx [--params P]`: a whole network from a spec (TOML or JSON) and its
//! weights (safetensors or .npz with PyTorch's key names), through `ditac_tools::graph::inference_model`.

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use ditac_tools::graph::{check_params, inference_model, init_params};
use ditac_tools::params::Params;
use ditac_tools::spec::Spec;
use ditac_tools::transform::save_model;
use std::path::{Path, PathBuf};

#[derive(ClapArgs)]
pub struct Args {
    /// The network description (TOML, or JSON).
    pub spec: PathBuf,
    /// The ONNX model to write.
    #[arg(short, long)]
    pub out: PathBuf,
    /// The weights (safetensors or .npz, PyTorch key names and layouts). Without: fresh weights
    /// initialised as PyTorch does (θ from the reference's prior), from --seed.
    #[arg(long)]
    pub params: Option<PathBuf>,
    /// Seed of the fresh weights (without --params).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the weights used to this file (.npz, or .safetensors by extension).
    #[arg(long)]
    pub save_params: Option<PathBuf>,
}

/// Writes `p` to `path` (by extension: `.safetensors`, else `.npz`) through a temporary file.
pub fn save_params_atomic(p: &Params, path: &Path) -> Result<()> {
    // Both writers go through `ditac_tools::output` (a temporary file, then a rename).
    if path.extension().is_some_and(|e| e == "safetensors") {
        p.save_safetensors(path)
    } else {
        p.save_npz(path)
    }
}

pub fn run(args: Args) -> Result<()> {
    let spec = Spec::load(&args.spec)?;
    let net = spec.resolve()?;
    let params = match &args.params {
        Some(p) => Params::load(p)?,
        None => init_params(&net, args.seed)?,
    };
    // The outputs are checked before the work: not an input, not a link or device.
    ditac_tools::output::Output::new(&args.out)?;
    if let Some(sp) = &args.save_params {
        ditac_tools::output::Output::new(sp)?;
    }
    check_params(&net, &params).with_context(|| match &args.params {
        Some(p) => format!("parameters {}", p.display()),
        None => "initial parameters".into(),
    })?;
    let mut m = inference_model(&net, &params)?.build();
    save_model(&mut m, Path::new("."), &args.out)?;
    if let Some(sp) = &args.save_params {
        if let Err(e) = save_params_atomic(&params, sp) {
            let _ = std::fs::remove_file(&args.out);
            return Err(e);
        }
    }
    let ditac = net.layers.iter().filter(|l| l.attrs.is_some()).count();
    println!(
        "wrote {} ({} layers, {} DiTAC, {} parameters)",
        args.out.display(),
        net.layers.len(),
        ditac,
        net.params().map(|p| p.len()).sum::<usize>()
    );
    Ok(())
}
