//! The optimizer step of the portable path, in plain Rust, with the semantics of ONNX Runtime's
//! training kernels (`com.microsoft.AdamWOptimizer` with `adam_mode = 1, correct_bias = 1`, the
//! mode ORT's generator writes, and `SGDOptimizerV2`), float32 throughout like the kernels.

use super::{OptimizerKind, TrainConfig};

/// Optimizer state for a list of parameter tensors.
#[derive(Debug, Clone)]
pub struct Optimizer {
    kind: OptimizerKind,
    pub lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    /// Steps taken so far (ORT's `step`; the kernel sees step + 1).
    pub step: i64,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Optimizer {
    /// Zero moments for tensors of `sizes` elements.
    pub fn new(cfg: &TrainConfig, sizes: &[usize]) -> Optimizer {
        Optimizer {
            kind: cfg.optimizer,
            lr: cfg.lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.epsilon,
            weight_decay: cfg.weight_decay,
            step: 0,
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// One update of every parameter with its gradient.
    pub fn update<'a>(&mut self, tensors: impl IntoIterator<Item = (&'a mut [f32], &'a [f32])>) {
        self.step += 1;
        let lr = self.lr;
        match self.kind {
            OptimizerKind::Sgd => {
                for (w, g) in tensors {
                    for (w, g) in w.iter_mut().zip(g) {
                        *w += -lr * g;
                    }
                }
            }
            OptimizerKind::AdamW => {
                // AdamWComputeMode1: bias correction folded into the learning rate (computed as
                // ORT does: pow in double, rounded to float), weight decay after the update.
                let (a, b) = (self.beta1, self.beta2);
                let ac = 1.0f32 - (a as f64).powf(self.step as f64) as f32;
                let bc = 1.0f32 - (b as f64).powf(self.step as f64) as f32;
                let lr_c = lr * (bc.sqrt() / ac);
                let wd = self.weight_decay;
                for (i, (w, g)) in tensors.into_iter().enumerate() {
                    let (m, v) = (&mut self.m[i], &mut self.v[i]);
                    for k in 0..w.len() {
                        let gk = g[k];
                        m[k] = a * m[k] + (1.0 - a) * gk;
                        v[k] = b * v[k] + (1.0 - b) * gk * gk;
                        let denom = v[k].sqrt() + self.eps;
                        w[k] -= lr_c * m[k] / denom;
                        if wd != 0.0 {
                            w[k] -= lr * wd * w[k];
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_first_step_moves_by_lr() {
        let cfg = TrainConfig::default();
        let mut o = Optimizer::new(&cfg, &[2]);
        let mut w = vec![1.0f32, -1.0];
        let g = vec![0.5f32, -2.0];
        o.update([(w.as_mut_slice(), g.as_slice())]);
        // First bias-corrected Adam step: w − lr·sign(g) (up to ε).
        assert!((w[0] - (1.0 - cfg.lr)).abs() < 1e-6, "{w:?}");
        assert!((w[1] - (-1.0 + cfg.lr)).abs() < 1e-6, "{w:?}");
    }
}
