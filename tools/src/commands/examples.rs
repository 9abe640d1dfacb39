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
    /// The network description.
    #[arg(long, default_value = "models/ditac_mlp.toml")]
    pub spec: PathBuf,
    /// Seed of the weights and of θ.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

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

pub fn run(args: Args) -> Result<()> {
    ditac_tools::output::output_folder(&args.out)?;
    let net = Spec::load(&args.spec)?.resolve()?;
    let params = init_params(&net, args.seed)?;
    let mut m = inference_model(&net, &params)?.build();
    let full = args.out.join("ditac_mlp.onnx");
    save_model(&mut m, Path::new("."), &full)?;
    println!("wrote {}", full.display());
    super::build::save_params_atomic(&params, &args.out.join("ditac_mlp.npz"))?;
    let mut frozen = m.clone();
    freeze_model(&mut frozen, &args.out, None)?;
    let lut = args.out.join("ditac_mlp_lut.onnx");
    save_model(&mut frozen, Path::new("."), &lut)?;
    println!("wrote {}", lut.display());
    lower_in_place(&mut m, &args.out, &LowerOptions::default())?;
    let low = args.out.join("ditac_mlp_lowered.onnx");
    save_model(&mut m, Path::new("."), &low)?;
    println!("wrote {}", low.display());
    Ok(())
}
