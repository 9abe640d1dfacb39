//! The CPU kernels: `DiTAC`, `DiTACLut` and `DiTACGrad` for float, float16 and double. The node's
//! attributes and warps come from [`Node`]; the elementwise work is [`host`](super::host)'s.

use half::f16;

use super::context::{Kernel, KernelContext, KernelInfo};
use super::host::{backward, forward, Element};
use super::node::Node;
use super::{Elem, OpKind, PResult, PluginError};

/// Creates the CPU kernel of op `kind` for tensors of `elem`.
pub fn create(
    kind: OpKind,
    elem: Elem,
    info: &KernelInfo,
    prefix: &str,
) -> PResult<Box<dyn Kernel>> {
    Ok(match elem {
        Elem::F32 => Box::new(CpuKernel::<f32>::new(kind, info, prefix)?),
        Elem::F16 => Box::new(CpuKernel::<f16>::new(kind, info, prefix)?),
        Elem::F64 => Box::new(CpuKernel::<f64>::new(kind, info, prefix)?),
        Elem::BF16 => return Err(PluginError::fail("bfloat16 is not a CPU type here")),
    })
}

/// `DiTAC`, `DiTACLut` or `DiTACGrad` for one element type.
struct CpuKernel<E: Element> {
    node: Node<E::R>,
}

impl<E: Element> CpuKernel<E> {
    fn new(kind: OpKind, info: &KernelInfo, prefix: &str) -> PResult<Self> {
        Ok(CpuKernel {
            node: Node::new(kind, info, prefix)?,
        })
    }

    fn run(&self, ctx: &KernelContext) -> PResult<()> {
        let (xi, dyi) = self.node.data_inputs();
        let x = ctx
            .input::<E>(xi)?
            .ok_or_else(|| PluginError::invalid("input 'X' is missing"))?;
        let w = self.node.warps(ctx)?;
        let (c, inner) = self.node.layout(&x.shape, &w)?;
        match dyi {
            None => {
                let y = ctx.output::<E>(0, &x.shape)?;
                forward::<E>(ctx, &w, x.data, y, c, inner)
            }
            Some(gi) => {
                let dy = ctx
                    .input::<E>(gi)?
                    .ok_or_else(|| PluginError::invalid("input 'dY' is missing"))?;
                Node::<E::R>::check_dy(&dy.shape, &x.shape)?;
                let dx = ctx.output::<E>(0, &x.shape)?;
                let dth = ctx.output::<f32>(1, w.shape())?;
                backward::<E>(ctx, &w, dy.data, x.data, dx, dth, c, inner)
            }
        }
    }
}

impl<E: Element> Kernel for CpuKernel<E> {
    fn compute(&self, ctx: &KernelContext) -> PResult<()> {
        self.run(ctx).map_err(|e| e.in_node(self.node.prefix()))
    }
}
