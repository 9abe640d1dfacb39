//! `ditac build SPEC -o OUT.onnx [--params P]`: a whole network from a spec (TOML or JSON) and its
//! weights (safetensors or .npz with PyTorch's key names), through `ditac_tools::graph::inference_model`.

use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use ditac::basis::{self, BasisKind};
use ditac_tools::graph::{check_params, inference_model, init_params};
use ditac_tools::params::Params;
use ditac_tools::spec::Spec;
use ditac_tools::transform::patch::machine_dependent_qr_message;
use ditac_tools::transform::save_model;
use std::path::{Path, PathBuf};

#[derive(ClapArgs)]
pub struct Args {
    /// The network description (TOML, or JSON).
    pub spec: PathBuf,
    /// The ONNX model to write.
    #[arg(short, long)]
    pub out: PathBuf,
    /// The weights (safetensors or .npz, PyTorch key names and layouts). Default: fresh weights
    /// initialised as PyTorch does (θ from the reference's prior), from --seed.
    #[arg(long)]
    pub params: Option<PathBuf>,
    /// Seed of the fresh weights (without --params).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the weights used to this file (.npz, or .safetensors by extension; default: not
    /// written).
    #[arg(long)]
    pub save_params: Option<PathBuf>,
    /// Accept --params with basis "qr" at a tess where the reference's qr depends on the training
    /// machine (tess 6 with a zero boundary, tess ≥ 20): right only for θ trained with this
    /// project's qr.
    #[arg(long)]
    pub allow_machine_dependent_qr: bool,
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
    if args.params.is_some() && !args.allow_machine_dependent_qr {
        // Trained weights: a θ from the reference means something only in its training run's B.
        for l in &net.layers {
            if let Some(at) = &l.attrs {
                if at.basis == BasisKind::Qr
                    && basis::qr_is_machine_dependent(at.tess(), at.zero_boundary())
                {
                    bail!(
                        "spec: layer {} (ditac): {}",
                        l.index,
                        machine_dependent_qr_message(
                            at,
                            &format!("basis = \"explicit\" in the spec, with B as tensor \"{}.B\" in --params", l.prefix),
                            "--allow-machine-dependent-qr"
                        )
                    );
                }
            }
        }
    }
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
