//! The portable training path: the training graph (with its accumulators in standard ops, see
//! [`super::artifacts::portable_training_model`]) in a plain ONNX Runtime inference session; each
//! step feeds the batch, the parameters, the gradient buffers and `lazy_reset_grad = true`, reads
//! the loss and the gradients, and applies the optimizer in Rust ([`super::optimizer`]).
//! Input tensors are allocated once and refilled in place.

use super::artifacts::{ParamInfo, BUFFER_SUFFIX, OUT_SUFFIX, RESET};
use super::data::{Dataset, Targets};
use super::engine::Engine;
use super::loss::LOSS;
use super::optimizer::Optimizer;
use super::TrainConfig;
use crate::params::{Params, Tensor as PTensor};
use anyhow::{bail, Context, Result};
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;

/// A training session of the portable path.
pub struct PortableTrainer {
    session: Session,
    infos: Vec<ParamInfo>,
    params: Vec<Tensor<f32>>,
    buffers: Vec<Tensor<f32>>,
    reset: Tensor<bool>,
    x: Tensor<f32>,
    yv: Option<Tensor<f32>>,
    yc: Option<Tensor<i64>>,
    grad_names: Vec<String>,
    grads: Vec<Vec<f32>>,
    batch: usize,
    pub optimizer: Optimizer,
}

impl PortableTrainer {
    /// `session` must hold the portable training model of the network whose parameters are
    /// `infos`, starting from `init`; batches have `batch` samples shaped like `data`'s.
    pub fn new(
        session: Session,
        infos: Vec<ParamInfo>,
        init: &Params,
        cfg: &TrainConfig,
        batch: usize,
        data: &Dataset,
    ) -> Result<PortableTrainer> {
        let mut params = Vec::new();
        let mut buffers = Vec::new();
        for p in &infos {
            let v = init.get(&p.key)?;
            params.push(Tensor::from_array((p.shape.clone(), v.data.clone()))?);
            buffers.push(Tensor::from_array((
                p.shape.clone(),
                vec![0.0f32; p.len()],
            ))?);
        }
        let mut xs = vec![batch];
        xs.extend(&data.x_shape);
        let x = Tensor::from_array((xs, vec![0.0f32; batch * data.x_len()]))?;
        let (yv, yc) = match &data.y {
            Targets::Values(_) => {
                let mut ys = vec![batch];
                ys.extend(&data.y_shape);
                (
                    Some(Tensor::from_array((
                        ys,
                        vec![0.0f32; batch * data.y_len()],
                    ))?),
                    None,
                )
            }
            Targets::Classes(_) => (
                None,
                Some(Tensor::from_array((vec![batch], vec![0i64; batch]))?),
            ),
        };
        let sizes: Vec<usize> = infos.iter().map(ParamInfo::len).collect();
        Ok(PortableTrainer {
            session,
            grad_names: infos
                .iter()
                .map(|p| format!("{}{OUT_SUFFIX}", p.key))
                .collect(),
            grads: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            optimizer: Optimizer::new(cfg, &sizes),
            infos,
            params,
            buffers,
            reset: Tensor::from_array((vec![1usize], vec![true]))?,
            x,
            yv,
            yc,
            batch,
        })
    }

    /// Runs the training graph on the samples `idx` of `data` without updating: the loss, with the
    /// gradients left in [`Self::gradients`].
    pub fn forward_backward(&mut self, data: &Dataset, idx: &[usize]) -> Result<f32> {
        if idx.len() != self.batch {
            bail!(
                "batch of {} samples: this trainer takes {}",
                idx.len(),
                self.batch
            );
        }
        {
            let (_, x) = self.x.extract_tensor_mut();
            let mut dummy_v = [];
            let mut dummy_c = [];
            let yv: &mut [f32] = match &mut self.yv {
                Some(t) => t.extract_tensor_mut().1,
                None => &mut dummy_v,
            };
            let yc: &mut [i64] = match &mut self.yc {
                Some(t) => t.extract_tensor_mut().1,
                None => &mut dummy_c,
            };
            data.gather(idx, x, yv, yc);
        }
        let mut inputs: Vec<(String, SessionInputValue<'_>)> =
            Vec::with_capacity(3 + 2 * self.params.len());
        inputs.push(("x".into(), (&self.x).into()));
        match (&self.yv, &self.yc) {
            (Some(t), _) => inputs.push(("target".into(), t.into())),
            (_, Some(t)) => inputs.push(("target".into(), t.into())),
            _ => unreachable!(),
        }
        for (p, t) in self.infos.iter().zip(&self.params) {
            inputs.push((p.key.clone(), t.into()));
        }
        for (p, t) in self.infos.iter().zip(&self.buffers) {
            inputs.push((format!("{}{BUFFER_SUFFIX}", p.key), t.into()));
        }
        inputs.push((RESET.into(), (&self.reset).into()));
        let out = self.session.run(inputs)?;
        let loss = out[LOSS].try_extract_tensor::<f32>()?.1[0];
        for (g, name) in self.grads.iter_mut().zip(&self.grad_names) {
            let v = out[name.as_str()]
                .try_extract_tensor::<f32>()
                .with_context(|| format!("gradient output {name}"))?
                .1;
            g.copy_from_slice(v);
        }
        Ok(loss)
    }

    /// One training step on the samples `idx`: returns the loss before the update. A non-finite
    /// loss or gradient is an error and leaves the parameters as they were.
    pub fn step(&mut self, data: &Dataset, idx: &[usize]) -> Result<f32> {
        let loss = self.forward_backward(data, idx)?;
        if !loss.is_finite() {
            bail!("training diverged: the loss is {loss} (try a smaller --lr)");
        }
        for (p, g) in self.infos.iter().zip(&self.grads) {
            if let Some(i) = g.iter().position(|v| !v.is_finite()) {
                bail!(
                    "training diverged: the gradient of \"{}\" is {} at index {i} (try a smaller --lr)",
                    p.key,
                    g[i]
                );
            }
        }
        let grads = &self.grads;
        let params = self.params.iter_mut().map(|t| t.extract_tensor_mut().1);
        self.optimizer
            .update(params.zip(grads.iter().map(Vec::as_slice)));
        for (p, t) in self.infos.iter().zip(&self.params) {
            let v = t.extract_tensor().1;
            if let Some(i) = v.iter().position(|v| !v.is_finite()) {
                bail!(
                    "training diverged: the update made \"{}\" {} at index {i} (try a smaller --lr)",
                    p.key,
                    v[i]
                );
            }
        }
        Ok(loss)
    }

    /// The gradients of the last [`Self::forward_backward`], in parameter order.
    pub fn gradients(&self) -> &[Vec<f32>] {
        &self.grads
    }

    pub fn param_infos(&self) -> &[ParamInfo] {
        &self.infos
    }

    /// The current parameters (ONNX shapes).
    pub fn params(&self) -> Params {
        let mut out = Params::default();
        for (p, t) in self.infos.iter().zip(&self.params) {
            let (_, v) = t.extract_tensor();
            out.insert(p.key.clone(), PTensor::new(p.shape.clone(), v.to_vec()));
        }
        out
    }

    /// Overwrites one parameter's values (finite differences in the tests).
    pub fn set_param(&mut self, i: usize, values: &[f32]) {
        self.params[i]
            .extract_tensor_mut()
            .1
            .copy_from_slice(values);
    }
}

impl Engine for PortableTrainer {
    fn step(&mut self, data: &Dataset, idx: &[usize]) -> Result<f32> {
        PortableTrainer::step(self, data, idx)
    }
    fn params(&self) -> Result<Params> {
        Ok(PortableTrainer::params(self))
    }
}
