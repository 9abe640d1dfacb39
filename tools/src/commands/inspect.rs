//! `ditac inspect IN.onnx [--json]`: the ai.ditac nodes (attributes, θ shape, table size) and the
//! opset imports.

use anyhow::Result;
use clap::Args as ClapArgs;
use ditac_tools::transform::inspect::{inspect, render_text};
use ditac_tools::transform::ModelFile;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// The model.
    pub input: PathBuf,
    /// One JSON object for scripts.
    #[arg(long)]
    pub json: bool,
    /// Also list every node (name, op, inputs, outputs): the names `patch --node` takes.
    #[arg(long)]
    pub all: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mf = ModelFile::load(&args.input)?;
    let v = inspect(&mf, args.all)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render_text(&v));
    }
    Ok(())
}
