//! The tools' side of the memory budget (`ditac::core::budget`): one budget per command, from
//! `--max-bytes`, else `DITAC_MAX_BYTES`, else 1 GiB. Sizes read from models, specs, parameter
//! files and flags are multiplied with checked arithmetic and compared with it before anything of
//! that size is allocated; a command that would need more stops with exit status 2 and a message
//! naming the sizes (instead of an allocation abort).

use anyhow::{anyhow, Result};
use ditac::core::budget as core_budget;
use std::sync::OnceLock;

static MAX_BYTES: OnceLock<u64> = OnceLock::new();

/// Sets the budget for this process (the `--max-bytes` flag); the first call wins.
pub fn set_max_bytes(bytes: u64) {
    let _ = MAX_BYTES.set(bytes);
}

/// The budget: `--max-bytes`, else `DITAC_MAX_BYTES`, else 1 GiB.
pub fn max_bytes() -> Result<u64> {
    if let Some(&b) = MAX_BYTES.get() {
        return Ok(b);
    }
    core_budget::from_env().map_err(|e| anyhow!("{e}"))
}

/// Checks that `bytes` (None: an overflowing count) fits the budget; the error names `what`.
pub fn check(what: &str, bytes: Option<u128>) -> Result<()> {
    core_budget::check(what, bytes, max_bytes()?).map_err(|e| anyhow!("{e}"))
}

/// Checks `count` values of `size` bytes against the budget.
pub fn check_values(what: &str, count: Option<u128>, size: usize) -> Result<()> {
    check(what, count.and_then(|c| core_budget::bytes_of(c, size)))
}

/// The number of elements of a tensor with `dims` (from a file: may be negative or overflow).
pub fn elements(what: &str, dims: &[i64]) -> Result<usize> {
    if let Some(d) = dims.iter().find(|&&d| d < 0) {
        return Err(anyhow!(
            "{what} has dims {dims:?}: expected sizes ≥ 0 (found {d})"
        ));
    }
    core_budget::elements(dims)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| anyhow!("{what} has dims {dims:?}: their product overflows"))
}

/// The product of `dims` (sizes computed from a spec), checked.
pub fn product(what: &str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| anyhow!("{what} has shape {dims:?}: its size overflows"))
}

/// A vector of `n` copies of `value` within the budget, allocated fallibly.
pub fn try_vec<T: Clone>(what: &str, n: usize, value: T) -> Result<Vec<T>> {
    check_values(what, Some(n as u128), std::mem::size_of::<T>())?;
    core_budget::try_vec(n, value, what).map_err(|e| anyhow!("{e}"))
}
