//! `each!` (arrays of vectors without closures) and `instantiate!` (an instruction set's entry
//! points).

/// `[f(0), …, f(n − 1)]` written as a loop: unlike `std::array::from_fn`'s closure, the body is
/// compiled with the enclosing function's target features (a closure that is not inlined loses
/// them and turns every intrinsic into a call).
macro_rules! each {
    ($n:expr, $h:ident => $e:expr) => {{
        // SAFETY: the element types (vectors, masks, arrays of them) are valid all-zero (a
        // requirement of `Lanes`).
        let mut out = [unsafe { std::mem::zeroed() }; $n];
        for $h in 0..$n {
            out[$h] = $e;
        }
        out
    }};
}

/// The entry points of one instruction set, each a `#[target_feature]` function that
/// instantiates the generic kernels with the set's [`Lanes`](super::Lanes) token `$S` (so that
/// everything inlines and is compiled with `$features`): `forward`, `outer`, `backward` and
/// `exact`, with the signatures `kernels/mod.rs` dispatches to. `$fast` is the number of vectors
/// a step of the exact mode's table path (a tuning that differs by set).
macro_rules! instantiate {
    ($S:ty, $features:literal, exact_table_vectors = $fast:literal) => {
        use crate::core::config::Variant;
        use crate::core::kernels::exact::{ExactKernel, FAST_NODES};
        use crate::core::kernels::lanes::{flow, table};
        use crate::core::kernels::params::{GradTables, TableKernel};

        /// Vectors a step of the table forward and backward.
        const TABLE_VECTORS: usize = 2;

        #[target_feature(enable = $features)]
        unsafe fn forward_v<const V: u8, const LINEAR: bool>(
            k: &TableKernel,
            n: usize,
            x: &[f32],
            y: &mut [f32],
            offs: Option<&[u32]>,
        ) {
            let s = <$S as crate::core::kernels::lanes::Lanes>::new_unchecked();
            table::forward::<$S, V, LINEAR, TABLE_VECTORS>(s, k, n, x, y, offs)
        }

        /// The table forward of `dispatch_scalar`, bit for bit.
        ///
        /// # Safety
        /// The CPU runs the instruction set; `k.xt` holds every row the offsets name (n nodes
        /// each).
        pub(in crate::core::kernels) unsafe fn forward(
            k: &TableKernel,
            n: usize,
            x: &[f32],
            y: &mut [f32],
            offs: Option<&[u32]>,
        ) {
            by_variant!(k.variant, k.linear, |V, L| forward_v::<V, L>(
                k, n, x, y, offs
            ))
        }

        #[target_feature(enable = $features)]
        unsafe fn outer_v<const V: u8>(alpha: f32, x: &[f32], w: &[f32], y: &mut [f32]) {
            table::outer_slice::<$S, V, 1>(
                <$S as crate::core::kernels::lanes::Lanes>::new_unchecked(),
                alpha,
                x,
                w,
                y,
            )
        }

        /// `outer_scalar`, bit for bit.
        ///
        /// # Safety
        /// The CPU runs the instruction set.
        pub(in crate::core::kernels) unsafe fn outer(
            variant: Variant,
            alpha: f32,
            x: &[f32],
            w: &[f32],
            y: &mut [f32],
        ) {
            match variant {
                Variant::Ditac => outer_v::<0>(alpha, x, w, y),
                Variant::Ge => outer_v::<1>(alpha, x, w, y),
                Variant::Leaky => outer_v::<2>(alpha, x, w, y),
            }
        }

        /// `grad_elem` on every element; writes dX, and s, the node and the right weight of the
        /// in-range elements only, in order, at the start of sb/ib/fb; returns how many.
        ///
        /// # Safety
        /// The CPU runs the instruction set; the tables hold every row the offsets name.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        pub(in crate::core::kernels) unsafe fn backward<const V: u8, const LINEAR: bool>(
            k: &TableKernel,
            g: &GradTables,
            n: usize,
            x: &[f32],
            dy: &[f32],
            dx: &mut [f32],
            offs: Option<&[u32]>,
            sb: &mut [f64],
            ib: &mut [u32],
            fb: &mut [f32],
        ) -> usize {
            let s = <$S as crate::core::kernels::lanes::Lanes>::new_unchecked();
            table::backward::<$S, V, LINEAR, TABLE_VECTORS>(s, k, g, n, x, dy, dx, offs, sb, ib, fb)
        }

        #[target_feature(enable = $features)]
        unsafe fn exact_warp<const SMALL: bool>(
            k: &ExactKernel,
            x: &[f32],
            y: &mut [f32],
            fallback: &dyn Fn(f32) -> f32,
        ) {
            let s = <$S as crate::core::kernels::lanes::Lanes>::new_unchecked();
            flow::exact_warp::<$S, SMALL, { flow::EXACT_VECTORS }>(s, k, x, y, fallback)
        }

        #[target_feature(enable = $features)]
        unsafe fn exact_table<const SMALL: bool>(
            k: &ExactKernel,
            x: &[f32],
            y: &mut [f32],
            fallback: &dyn Fn(f32) -> f32,
        ) {
            let s = <$S as crate::core::kernels::lanes::Lanes>::new_unchecked();
            flow::exact_table::<$S, $fast>(s, k, x, y, fallback, exact_warp::<SMALL>)
        }

        /// Exact mode: through the checked interpolation table when there is one, every other
        /// lane through the constant-cost warp (its per-cell tables in registers for 16 cells or
        /// fewer); an in-range lane whose x̃ is not finite goes through `fallback`.
        ///
        /// # Safety
        /// The CPU runs the instruction set; the tables have the layout `FlowTables` states.
        pub(in crate::core::kernels) unsafe fn exact(
            k: &ExactKernel,
            x: &[f32],
            y: &mut [f32],
            fallback: &dyn Fn(f32) -> f32,
        ) {
            let fast = k.fast.len() == 2 * FAST_NODES;
            match (k.flow.nc <= 16, fast) {
                (true, true) => exact_table::<true>(k, x, y, fallback),
                (false, true) => exact_table::<false>(k, x, y, fallback),
                (true, false) => exact_warp::<true>(k, x, y, fallback),
                (false, false) => exact_warp::<false>(k, x, y, fallback),
            }
        }
    };
}

/// [`Lanes`](super::Lanes) methods that are one intrinsic each, as a table: `name(args) -> R =
/// intrinsic;` becomes `fn name(self, args) -> R { intrinsic(args) }`, inlined, in an `unsafe`
/// block whose justification is the token (the instruction set runs wherever a token exists).
macro_rules! one_intrinsic {
    ($($name:ident($($a:ident: $t:ty),*) -> $r:ty = $f:path;)*) => {
        $(
            #[inline(always)]
            fn $name(self, $($a: $t),*) -> $r {
                // SAFETY: the token: the instruction set runs here.
                unsafe { $f($($a),*) }
            }
        )*
    };
}
