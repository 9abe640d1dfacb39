//! `ditac example-models -o DIR`: writes the example networks of `models/` with our own graph writer.
//! A 2→16→16→1 MLP with two DiTAC layers (one θ shared by the layer, one θ per channel), θ drawn
//! from the reference's init prior (ditac.md §9) with a fixed seed, and its frozen twin with
//! `DiTACLut` tables.

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use ditac::core::{basis, prior, Activation, Attrs, BasisKind};
use ditac::model::{ditac_attrs, lut_attrs, ElemType, ModelBuilder, DITAC_DOMAIN};
use std::path::{Path, PathBuf};

#[derive(ClapArgs)]
pub struct Args {
    /// Output folder.
    #[arg(short, long, default_value = "models")]
    pub out: PathBuf,
    /// Seed of the weights and of θ.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Weights as PyTorch's `nn.Linear` initialises them (uniform in ±1/√fan_in), from a seeded stream.
fn linear(rng: &mut u64, out: usize, inp: usize) -> (Vec<f32>, Vec<f32>) {
    let bound = 1.0 / (inp as f32).sqrt();
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        ((*rng >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound
    };
    let w = (0..out * inp).map(|_| next()).collect();
    let b = (0..out).map(|_| next()).collect();
    (w, b)
}

pub const HIDDEN: usize = 16;

pub fn layer_attrs() -> Attrs {
    Attrs {
        a: -3.0,
        b: 3.0,
        tess: 10,
        ..Default::default()
    }
}

fn write(path: &Path, m: &ModelBuilder) -> Result<()> {
    let tmp = path.with_extension("onnx.tmp");
    m.save(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let attrs = layer_attrs();
    let b = basis::build(attrs.tess(), true, BasisKind::Qr)?;
    let cov = prior::init_covariance(attrs.tess(), &b, 5.0, 2.0);
    let d = attrs.theta_len();
    let theta1 = prior::sample_theta(&cov, d, args.seed);
    let theta2: Vec<f32> = prior::sample_thetas(&cov, d, HIDDEN, args.seed + 1).concat();
    let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let (w1, b1) = linear(&mut rng, HIDDEN, 2);
    let (w2, b2) = linear(&mut rng, HIDDEN, HIDDEN);
    let (w3, b3) = linear(&mut rng, 1, HIDDEN);

    for frozen in [false, true] {
        let mut m = ModelBuilder::new(if frozen { "ditac_mlp_lut" } else { "ditac_mlp" });
        m.input("x", ElemType::Float, &[-1, 2])
            .output("y", ElemType::Float, &[-1, 1])
            .initializer_f32("fc1.weight", &[HIDDEN, 2], &w1)
            .initializer_f32("fc1.bias", &[HIDDEN], &b1)
            .initializer_f32("fc2.weight", &[HIDDEN, HIDDEN], &w2)
            .initializer_f32("fc2.bias", &[HIDDEN], &b2)
            .initializer_f32("fc3.weight", &[1, HIDDEN], &w3)
            .initializer_f32("fc3.bias", &[1], &b3);
        let gemm = [("transB", ditac::model::Attr::Int(1))];
        m.node(
            "Gemm",
            "",
            "fc1",
            &["x", "fc1.weight", "fc1.bias"],
            &["h1"],
            &gemm,
        );
        m.node(
            "Gemm",
            "",
            "fc2",
            &["a1", "fc2.weight", "fc2.bias"],
            &["h2"],
            &gemm,
        );
        m.node(
            "Gemm",
            "",
            "fc3",
            &["a2", "fc3.weight", "fc3.bias"],
            &["y"],
            &gemm,
        );
        for (name, inp, out, theta, rows) in [
            ("act1", "h1", "a1", &theta1, 1usize),
            ("act2", "h2", "a2", &theta2, HIDDEN),
        ] {
            if frozen {
                let mut table = Vec::new();
                for r in 0..rows {
                    let act = Activation::<f32>::from_theta(
                        &attrs,
                        &b,
                        &theta[r * d..(r + 1) * d],
                        false,
                    )?;
                    table.extend_from_slice(act.table_values().context("table")?);
                }
                let n = attrs.lut_size as usize;
                let dims: Vec<usize> = if rows == 1 { vec![n] } else { vec![rows, n] };
                let tname = format!("{name}.table");
                m.initializer_f32(&tname, &dims, &table);
                m.node(
                    "DiTACLut",
                    DITAC_DOMAIN,
                    name,
                    &[inp, &tname],
                    &[out],
                    &lut_attrs(&attrs),
                );
            } else {
                let tname = format!("{name}.thetas");
                let dims: Vec<usize> = if rows == 1 { vec![d] } else { vec![rows, d] };
                m.initializer_f32(&tname, &dims, theta);
                m.node(
                    "DiTAC",
                    DITAC_DOMAIN,
                    name,
                    &[inp, &tname],
                    &[out],
                    &ditac_attrs(&attrs),
                );
            }
            m.value(out, ElemType::Float, &[-1, HIDDEN as i64]);
        }
        let file = if frozen {
            "ditac_mlp_lut.onnx"
        } else {
            "ditac_mlp.onnx"
        };
        write(&args.out.join(file), &m)?;
    }
    Ok(())
}
