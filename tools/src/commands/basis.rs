use anyhow::Result;
use clap::Args as ClapArgs;
use ditac::core::{basis, AttrSet, AttrValues, Attrs, BasisKind};

#[derive(ClapArgs)]
pub struct Args {
    /// Number of cells of the tessellation (1..=1024).
    #[arg(long)]
    tess: i64,
    /// 1: zero velocity at both ends (d = tess−1); 0: free ends (d = tess+1).
    #[arg(long, default_value_t = 1)]
    zero_boundary: i64,
    /// qr (the reference default), rref or sparse.
    #[arg(long, default_value = "qr")]
    basis: String,
}

pub fn run(args: Args) -> Result<()> {
    let given = AttrValues {
        tess: Some(args.tess),
        zero_boundary: Some(args.zero_boundary),
        basis: Some(args.basis),
        ..Default::default()
    };
    let attrs = Attrs::read(&given, AttrSet::Warp)?;
    let kind = attrs.basis;
    if kind == BasisKind::Explicit {
        anyhow::bail!("attribute 'basis' = \"explicit\": expected one of \"qr\", \"rref\", \"sparse\" (an explicit basis is given, not built)");
    }
    let b = basis::build(attrs.tess(), attrs.zero_boundary(), kind)?;
    let rows: Vec<serde_json::Value> = (0..b.rows)
        .map(|r| (0..b.cols).map(|c| super::json::num(b.at(r, c))).collect())
        .collect();
    println!("{}", serde_json::Value::Array(rows));
    Ok(())
}
