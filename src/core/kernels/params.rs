//! What the table kernels read: the forward's constants and tables ([`TableKernel`]), the
//! backward's ([`GradTables`]), and the block size of the per-element buffers. A leaf: the scalar
//! and vector kernels import it, and it imports nothing of them.

use crate::core::config::Variant;

/// Elements per block of channel offsets.
pub(crate) const BLOCK: usize = 512;

/// What a table forward needs, in the precision of the data.
#[derive(Clone, Copy)]
pub struct TableKernel<'a> {
    pub lo: f32,
    pub hi: f32,
    pub add_in: f32,
    pub mul_in: f32,
    pub scale: f32,
    /// x̃ at the nodes, in original units (C rows of n nodes one after the other for
    /// [`table_forward_channels`](super::table_forward_channels)).
    pub xt: &'a [f32],
    /// (x̃_i, x̃_{i+1} − x̃_i) per node, 2 floats a node, rows as `xt` (the last node of a row
    /// with 0): what the AVX2 linear kernel gathers, 64 bits a lane.
    pub pairs: &'a [f32],
    pub variant: Variant,
    pub alpha: f32,
    pub linear: bool,
}

/// The gradient tables that go with a [`TableKernel`] (same row layout).
#[derive(Clone, Copy)]
pub struct GradTables<'a> {
    /// dT̂/du at the nodes.
    pub dt: &'a [f32],
    /// (x̃_i, dT̂/du_i) per node, 2 floats a node (what the AVX2 nearest backward gathers).
    pub xdt: &'a [f32],
    /// dT̂/dθ at the nodes, n×d row-major per channel row.
    pub dtheta: &'a [f32],
    pub d: usize,
    pub mul_out: f32,
}
