use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use ditac::core::{basis, AttrSet, AttrValues, Attrs, BasisKind, Warps};
use serde_json::{json, Value};
use std::io::Read;

use super::json::num32;

/// The attributes default to those of ops.md (a −0.5, b 2, tess 10, zero boundary 1, basis qr,
/// variant ditac, alpha 0.01, lut size 2048, nearest).
#[derive(ClapArgs)]
pub struct Args {
    /// θ as comma-separated numbers (d = tess−1 with zero boundary, tess+1 without).
    #[arg(long, allow_hyphen_values = true)]
    theta: String,
    /// The interval's lower end a (default: -0.5).
    #[arg(long, allow_hyphen_values = true, help_heading = "Attributes")]
    a: Option<f32>,
    /// The interval's upper end b, above a (default: 2).
    #[arg(long, allow_hyphen_values = true, help_heading = "Attributes")]
    b: Option<f32>,
    /// Cells of the tessellation of [a, b] (default: 10).
    #[arg(long, allow_hyphen_values = true, help_heading = "Attributes")]
    tess: Option<i64>,
    /// 1: the velocity is zero at a and b (d = tess − 1), 0: free ends (d = tess + 1) (default: 1).
    #[arg(long, allow_hyphen_values = true, help_heading = "Attributes")]
    zero_boundary: Option<i64>,
    /// qr, rref, sparse or explicit with --basis-file (default: qr).
    #[arg(long, help_heading = "Attributes")]
    basis: Option<String>,
    /// JSON file with B as an array of 2·tess rows of d numbers (for --basis explicit; default:
    /// none).
    #[arg(long, help_heading = "Attributes")]
    basis_file: Option<std::path::PathBuf>,
    /// ditac, leaky or ge (default: ditac).
    #[arg(long, help_heading = "Attributes")]
    variant: Option<String>,
    /// The leaky variant's slope outside [a, b] (default: 0.01).
    #[arg(long, allow_hyphen_values = true, help_heading = "Attributes")]
    alpha: Option<f32>,
    /// Table nodes (0 = exact closed form, else 2..=2^24; default: 2048).
    #[arg(long, allow_hyphen_values = true, help_heading = "Attributes")]
    lut_size: Option<i64>,
    /// nearest or linear (default: nearest).
    #[arg(long, help_heading = "Attributes")]
    interpolation: Option<String>,
    /// Also print dy/dx and dy/dθ per element.
    #[arg(long)]
    grad: bool,
}

fn parse_number(tok: &str) -> Option<f32> {
    match tok.to_ascii_lowercase().as_str() {
        "nan" => Some(f32::NAN),
        "inf" | "+inf" | "infinity" => Some(f32::INFINITY),
        "-inf" | "-infinity" => Some(f32::NEG_INFINITY),
        _ => tok.parse::<f32>().ok(),
    }
}

fn parse_theta(s: &str) -> Result<Vec<f32>> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| parse_number(t).with_context(|| format!("--theta: '{t}' is not a number")))
        .collect()
}

fn read_basis_file(path: &std::path::Path, tess: usize, zb: bool) -> Result<ditac::core::Basis> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--basis-file {}: cannot read", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("--basis-file {}: not JSON", path.display()))?;
    let rows = v
        .as_array()
        .with_context(|| format!("--basis-file {}: expected an array of rows", path.display()))?;
    let cols = rows
        .first()
        .and_then(|r| r.as_array())
        .map_or(0, |r| r.len());
    let mut data = Vec::with_capacity(rows.len() * cols);
    for (i, r) in rows.iter().enumerate() {
        let r = r.as_array().filter(|r| r.len() == cols).with_context(|| {
            format!(
                "--basis-file {}: row {i} is not an array of {cols} numbers",
                path.display()
            )
        })?;
        for x in r {
            let f = x.as_f64().with_context(|| {
                format!(
                    "--basis-file {}: row {i} holds {x}, not a number",
                    path.display()
                )
            })?;
            data.push(f as f32);
        }
    }
    Ok(basis::explicit(tess, zb, &data, rows.len(), cols)?)
}

pub fn run(args: Args) -> Result<()> {
    let given = AttrValues {
        a: args.a,
        b: args.b,
        tess: args.tess,
        zero_boundary: args.zero_boundary,
        basis: args.basis.clone(),
        variant: args.variant.clone(),
        alpha: args.alpha,
        lut_size: args.lut_size,
        interpolation: args.interpolation.clone(),
        channel_axis: None,
    };
    let attrs = Attrs::read(&given, AttrSet::Warp)?;
    // Before the basis: a QR basis of a large tessellation takes seconds to build.
    ditac_tools::budget::check(
        &format!(
            "a warp table of {} nodes{}",
            attrs.lut_size,
            if args.grad { " with gradients" } else { "" }
        ),
        ditac::Activation::<f32>::table_bytes(&attrs, attrs.theta_len(), args.grad),
    )?;
    let theta = parse_theta(&args.theta)?;
    let basis = match (attrs.basis, &args.basis_file) {
        (BasisKind::Explicit, Some(p)) => read_basis_file(p, attrs.tess(), attrs.zero_boundary())?,
        (BasisKind::Explicit, None) => bail!("--basis explicit needs --basis-file B.json"),
        (_, Some(_)) => bail!(
            "--basis-file is only for --basis explicit (got --basis {})",
            args.basis.as_deref().unwrap_or("qr")
        ),
        (kind, None) => (*basis::build(attrs.tess(), attrs.zero_boundary(), kind)?).clone(),
    };
    let max_bytes = ditac_tools::budget::max_bytes()?;
    let warps = Warps::<f32>::from_theta_within(
        &attrs,
        &basis,
        &[theta.len()],
        &theta,
        args.grad,
        max_bytes,
    )?;
    let act = warps.row(0);

    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading standard input")?;
    let x: Vec<f32> = text
        .split_whitespace()
        .map(|t| parse_number(t).with_context(|| format!("standard input: '{t}' is not a number")))
        .collect::<Result<_>>()?;

    let mut y = vec![0.0f32; x.len()];
    act.forward(&x, &mut y);
    let mut out = serde_json::Map::new();
    out.insert("y".into(), y.iter().map(|&v| num32(v)).collect());
    if args.grad {
        let d = theta.len();
        let mut row = vec![0.0f32; d];
        let mut dx = Vec::with_capacity(x.len());
        let mut dth = Vec::with_capacity(x.len());
        for &xi in &x {
            dx.push(num32(act.element_grad(xi, &mut row)));
            dth.push(Value::Array(row.iter().map(|&v| num32(v)).collect()));
        }
        out.insert("dy_dx".into(), Value::Array(dx));
        out.insert("dy_dtheta".into(), Value::Array(dth));
    }
    println!("{}", json!(out));
    Ok(())
}
