//! `ditac lower IN.onnx -o OUT.onnx`: `DiTAC`/`DiTACLut` nodes become standard ONNX operators, so the
//! model runs without the plugin.

use anyhow::Result;
use clap::Args as ClapArgs;
use ditac_tools::transform::lower::{lower_in_place, LowerOptions};
use ditac_tools::transform::ModelFile;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// The model to lower (never modified).
    pub input: PathBuf,
    /// The model to write.
    #[arg(short, long)]
    pub out: PathBuf,
    /// erf of Φ: "plugin" (the plugin's approximation in plain operators: bit-identical to the
    /// plugin in ONNX Runtime) or "onnx" (the standard Erf operator: smaller, ~1e-7 away).
    #[arg(long, default_value = "plugin")]
    pub erf: String,
    /// Lower DiTAC nodes with lut_size = 0 (exact closed form) through a linear table of N nodes
    /// (an approximation). Default: none, and exact nodes are an error.
    #[arg(long, value_name = "N")]
    pub exact_lut: Option<i64>,
    /// Keep initializers stored in external data files external (the files are copied next to
    /// the output). Default: read them into the output when it fits in one file (< 2 GiB), so
    /// that it does not depend on data files beside it.
    #[arg(long)]
    pub keep_external_data: bool,
}

pub fn run(args: Args) -> Result<()> {
    let opts = LowerOptions {
        erf: args.erf.parse()?,
        exact_lut: args.exact_lut,
    };
    if let Some(n) = opts.exact_lut {
        if !(2..=ditac::core::config::MAX_LUT).contains(&n) {
            anyhow::bail!(
                "--exact-lut {n}: expected 2..={}",
                ditac::core::config::MAX_LUT
            );
        }
    }
    let mut mf = ModelFile::load(&args.input)?;
    // The output is checked before the work: not an input, not a link or device.
    ditac_tools::output::Output::new(&args.out)?;
    let dir = mf.dir.clone();
    let lowered = lower_in_place(&mut mf.model, &dir, &opts)?;
    mf.save_with(&args.out, args.keep_external_data)?;
    for n in &lowered {
        println!("{n}: lowered to standard operators");
    }
    println!("wrote {}", args.out.display());
    Ok(())
}
