//! `ditac plot IN.onnx -o DIR [--png]`: one picture per DiTAC/DiTACLut node with a constant θ or
//! table: the learned activation over [a, b] and beyond, against GELU, with [a, b] shaded.

use anyhow::{bail, Result};
use clap::Args as ClapArgs;
use ditac_tools::plot::activation::{file_stem, model_plots, png, svg};
use ditac_tools::transform::ModelFile;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// The model.
    pub input: PathBuf,
    /// Output folder (created if missing): NODE.svg (and NODE.png) per node.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Also write PNG pictures.
    #[arg(long)]
    pub png: bool,
    /// Only this node (repeatable; default: every DiTAC node with a constant θ or table).
    #[arg(long = "node", value_name = "NAME")]
    pub nodes: Vec<String>,
    /// Samples per curve.
    #[arg(long, default_value_t = 800)]
    pub points: usize,
}

pub fn run(args: Args) -> Result<()> {
    let mf = ModelFile::load(&args.input)?;
    ditac_tools::output::output_folder(&args.out)?;
    // A few numbers per point and node (x, the curves, the rendering).
    ditac_tools::budget::check_values(
        &format!("--points {}", args.points),
        Some(args.points as u128),
        64,
    )?;
    let (mut plots, skipped) = model_plots(mf.graph(), &mf.dir, args.points)?;
    for n in &args.nodes {
        if !plots.iter().any(|p| &p.node == n) {
            bail!("--node {n}: no DiTAC or DiTACLut node with a constant θ or table has this name");
        }
    }
    if !args.nodes.is_empty() {
        plots.retain(|p| args.nodes.contains(&p.node));
    }
    if plots.is_empty() {
        bail!(
            "{} has no DiTAC or DiTACLut node with a constant θ or table to plot",
            args.input.display()
        );
    }
    // Every output is checked before the pictures are drawn.
    for p in &plots {
        let stem = file_stem(&p.node);
        ditac_tools::output::Output::new(&args.out.join(format!("{stem}.svg")))?;
        if args.png {
            ditac_tools::output::Output::new(&args.out.join(format!("{stem}.png")))?;
        }
    }
    // Render everything first: nothing is written unless every picture could be made.
    let mut files = Vec::new();
    for p in &plots {
        let stem = file_stem(&p.node);
        files.push((format!("{stem}.svg"), svg(p)?.into_bytes()));
        if args.png {
            files.push((format!("{stem}.png"), png(p)?));
        }
    }
    for (name, bytes) in &files {
        let path = args.out.join(name);
        ditac_tools::output::Output::new(&path)?.write_bytes(bytes)?;
        println!("wrote {}", path.display());
    }
    for n in skipped {
        eprintln!("ditac: note: {n} not plotted: its θ is not a constant");
    }
    Ok(())
}
