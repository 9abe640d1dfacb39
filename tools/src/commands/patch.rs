//! `ditac patch IN.onnx --params P -o OUT.onnx --node NAME=KEY [...]`: named one-input, one-output
//! nodes become `DiTAC` nodes whose θ is the tensor KEY of P.

use anyhow::{bail, Result};
use clap::Args as ClapArgs;
use ditac::core::AttrValues;
use ditac_tools::model::basis_str;
use ditac_tools::params::Params;
use ditac_tools::transform::patch::{patch_model, AttrOverrides, Replacement};
use ditac_tools::transform::ModelFile;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// The model to patch (never modified).
    pub input: PathBuf,
    /// The parameters (safetensors or .npz) holding θ.
    #[arg(long)]
    pub params: PathBuf,
    /// The model to write.
    #[arg(short, long)]
    pub out: PathBuf,
    /// NAME=KEY[:B_KEY]: the node NAME becomes DiTAC with θ = tensor KEY ([d], [1, d] or [C, d]),
    /// and with B_KEY its own basis B ([2·tess, d], basis "explicit"). Repeatable.
    #[arg(long = "node", value_name = "NAME=KEY[:B_KEY]", required = true)]
    pub nodes: Vec<String>,
    /// The interval's lower end a (default: -0.5).
    #[arg(long, allow_hyphen_values = true, help_heading = "Attributes")]
    pub a: Option<f32>,
    /// The interval's upper end b, above a (default: 2).
    #[arg(long, allow_hyphen_values = true, help_heading = "Attributes")]
    pub b: Option<f32>,
    /// Cells of the tessellation (default: from θ's length d: d + 1 with a zero boundary, d − 1
    /// without).
    #[arg(long, help_heading = "Attributes")]
    pub tess: Option<i64>,
    /// 1: the velocity is zero at a and b, 0: free ends (default: 1).
    #[arg(long, help_heading = "Attributes")]
    pub zero_boundary: Option<i64>,
    /// qr, rref, sparse, or explicit with --basis-key (the basis θ was trained in; default: qr).
    #[arg(long, help_heading = "Attributes")]
    pub basis: Option<String>,
    /// The key of B ([2·tess, d]) in --params, for --basis explicit (θ trained with tess 6 or ≥ 20
    /// must travel with the reference's own B; see docs/exactness.md; default: none).
    #[arg(long, value_name = "KEY", help_heading = "Attributes")]
    pub basis_key: Option<String>,
    /// ditac, leaky or ge (default: ditac).
    #[arg(long, help_heading = "Attributes")]
    pub variant: Option<String>,
    /// The leaky variant's slope outside [a, b] (default: 0.01).
    #[arg(long, allow_hyphen_values = true, help_heading = "Attributes")]
    pub alpha: Option<f32>,
    /// Table nodes (0 = exact closed form; default: 2048).
    #[arg(long, allow_hyphen_values = true, help_heading = "Attributes")]
    pub lut_size: Option<i64>,
    /// nearest or linear (default: nearest).
    #[arg(long, help_heading = "Attributes")]
    pub interpolation: Option<String>,
    /// The channel axis of the input, for a θ with one row per channel (default: 1).
    #[arg(long, allow_hyphen_values = true, help_heading = "Attributes")]
    pub channel_axis: Option<i64>,
    /// Accept basis "qr" at a tess where the reference's qr depends on the training machine
    /// (tess 6 with a zero boundary, tess ≥ 20): right only for θ trained with this project's qr.
    #[arg(long)]
    pub allow_machine_dependent_qr: bool,
    /// Keep initializers stored in external data files external (the files are copied next to
    /// the output). Default: read them into the output when it fits in one file (< 2 GiB), so
    /// that it does not depend on data files beside it.
    #[arg(long)]
    pub keep_external_data: bool,
}

pub fn run(args: Args) -> Result<()> {
    let reps = args
        .nodes
        .iter()
        .map(|s| match s.split_once('=') {
            Some((n, k)) if !n.is_empty() && !k.is_empty() => {
                let (key, basis_key) = match k.split_once(':') {
                    Some((t, b)) if !t.is_empty() && !b.is_empty() => (t, Some(b.to_string())),
                    Some(_) => bail!("--node \"{s}\": expected NAME=KEY or NAME=KEY:B_KEY"),
                    None => (k, None),
                };
                Ok(Replacement {
                    node: n.to_string(),
                    key: key.to_string(),
                    basis_key,
                })
            }
            _ => bail!("--node \"{s}\": expected NAME=KEY or NAME=KEY:B_KEY"),
        })
        .collect::<Result<Vec<_>>>()?;
    let overrides = AttrOverrides {
        given: AttrValues {
            a: args.a,
            b: args.b,
            tess: args.tess,
            zero_boundary: args.zero_boundary,
            basis: args.basis,
            variant: args.variant,
            alpha: args.alpha,
            lut_size: args.lut_size,
            interpolation: args.interpolation,
            channel_axis: args.channel_axis,
        },
        basis_key: args.basis_key.clone(),
        allow_machine_dependent_qr: args.allow_machine_dependent_qr,
    };
    let mut mf = ModelFile::load(&args.input)?;
    let params = Params::load(&args.params)?;
    ditac_tools::output::Output::new(&args.out)?;
    let done = patch_model(&mut mf.model, &params, &reps, &overrides)?;
    mf.save_with(&args.out, args.keep_external_data)?;
    for p in &done {
        let channels = if p.channels == 1 {
            "1 θ row (shared by every channel)".to_string()
        } else {
            format!("{} channels along axis {}", p.channels, p.channel_axis)
        };
        let basis = match &p.basis_key {
            Some(k) => format!("B = \"{k}\""),
            None => format!("basis {}", basis_str(p.basis)),
        };
        println!(
            "{}: DiTAC with θ = \"{}\": tess {}, d {}, {channels}, {basis}",
            p.node, p.key, p.tess, p.d
        );
    }
    println!("wrote {}", args.out.display());
    Ok(())
}
