//! `ditac example-models -o DIR`: writes the example networks of `models/` with the tools' own
//! library calls, exactly as `tools/make-models.sh` does with the commands: `build` of the spec
//! `models/ditac_mlp.toml` with weights initialised from a fixed seed (saved as `ditac_mlp.npz`),
//! its `freeze`d twin with `DiTACLut` tables, and its `lower`ed twin in standard operators.

use anyhow::Result;
use clap::Args as ClapArgs;
use ditac::core::Attrs;
use ditac_tools::graph::{inference_model, init_params};
use ditac_tools::spec::Spec;
use ditac_tools::transform::freeze::freeze_model;
use ditac_tools::transform::lower::{lower_in_place, LowerOptions};
use ditac_tools::transform::save_model;
use std::path::{Path, PathBuf};

#[derive(ClapArgs)]
pub struct Args {
    /// Output folder.
    #[arg(short, long, default_value = "models")]
    pub out: PathBuf,
    /// The network description (default: models/ditac_mlp.toml, carried in this program).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Seed of the weights and of θ.
    #[arg(long, default_value_t = EXAMPLE_SEED)]
    pub seed: u64,
}

/// The seed the example models of models/ are made with.
pub const EXAMPLE_SEED: u64 = 7;

/// The hidden width of the example MLP (models/ditac_mlp.toml).
pub const HIDDEN: usize = 16;

/// The DiTAC attributes of both layers of the example MLP (models/ditac_mlp.toml).
pub fn layer_attrs() -> Attrs {
    Attrs {
        a: -3.0,
        b: 3.0,
        tess: 10,
        ..Default::default()
    }
}

/// models/ditac_mlp.toml, carried in the program so that `demo` and `example-models` work outside
/// the checkout.
const SPEC_TOML: &str = include_str!("../../../models/ditac_mlp.toml");

/// Writes the example models into `out` from `spec` (else the carried spec); returns their paths
/// (full, frozen, lowered).
pub fn write_models(out: &Path, spec: Option<&Path>, seed: u64) -> Result<[PathBuf; 3]> {
    ditac_tools::output::output_folder(out)?;
    let spec = match spec {
        Some(p) => Spec::load(p)?,
        None => Spec::from_toml(SPEC_TOML)?,
    };
    let net = spec.resolve()?;
    let params = init_params(&net, seed)?;
    let mut m = inference_model(&net, &params)?.build();
    let full = out.join("ditac_mlp.onnx");
    save_model(&mut m, Path::new("."), &full)?;
    super::build::save_params_atomic(&params, &out.join("ditac_mlp.npz"))?;
    let mut frozen = m.clone();
    freeze_model(&mut frozen, out, None)?;
    let lut = out.join("ditac_mlp_lut.onnx");
    save_model(&mut frozen, Path::new("."), &lut)?;
    lower_in_place(&mut m, out, &LowerOptions::default())?;
    let low = out.join("ditac_mlp_lowered.onnx");
    save_model(&mut m, Path::new("."), &low)?;
    Ok([full, lut, low])
}

pub fn run(args: Args) -> Result<()> {
    for p in write_models(&args.out, args.spec.as_deref(), args.seed)? {
        println!("wrote {}", p.display());
    }
    Ok(())
}
