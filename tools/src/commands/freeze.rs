//! `ditac freeze IN.onnx -o OUT.onnx [--tables P]`: `DiTAC` nodes with a constant θ become
//! `DiTACLut` nodes with their precomputed tables (bit-identical outputs).

use anyhow::Result;
use clap::Args as ClapArgs;
use ditac_tools::params::Params;
use ditac_tools::transform::freeze::freeze_model;
use ditac_tools::transform::ModelFile;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// The model to freeze (never modified).
    pub input: PathBuf,
    /// The model to write.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Tables computed elsewhere (safetensors or .npz; e.g. the reference's lingrid_t), keyed by
    /// node name: [n] or [C, n] values of T̂ on the normalised grid. Default: computed here.
    #[arg(long)]
    pub tables: Option<PathBuf>,
    /// Keep initializers stored in external data files external (the files are copied next to
    /// the output). Default: read them into the output when it fits in one file (< 2 GiB), so
    /// that it does not depend on data files beside it.
    #[arg(long)]
    pub keep_external_data: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut mf = ModelFile::load(&args.input)?;
    let tables = args.tables.as_deref().map(Params::load).transpose()?;
    // The output is checked before the work: not an input, not a link or device.
    ditac_tools::output::Output::new(&args.out)?;
    let dir = mf.dir.clone();
    let report = freeze_model(&mut mf.model, &dir, tables.as_ref())?;
    mf.save_with(&args.out, args.keep_external_data)?;
    for (n, dims) in &report.frozen {
        println!("{n}: DiTACLut, table {dims:?}");
    }
    for (n, why) in &report.kept {
        eprintln!("ditac: note: {n} left as DiTAC: {why}");
    }
    println!("wrote {}", args.out.display());
    Ok(())
}
