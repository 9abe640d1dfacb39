//! The memory budget: every allocation whose size comes from a model, a spec, parameters or flags
//! is computed with checked arithmetic and compared with a budget before it is made (fallibly), so
//! that a size the ops accept but the machine cannot hold is an error naming the sizes, not an
//! abort of the host process (Rust's allocator aborts on failure; `catch_unwind` cannot help).
//!
//! The budget is per node (the plugin: the tables of one node) or per command (the tools: the
//! largest single allocation). Default [`DEFAULT_MAX_BYTES`] (1 GiB); overridden by the session
//! config entry [`CONFIG_KEY`] (plugin), the environment variable [`ENV_VAR`] (both) or the flag
//! `--max-bytes` (tools).

use super::error::DitacError;

/// 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// The environment variable that overrides the default budget (bytes, or with a K/M/G suffix).
pub const ENV_VAR: &str = "DITAC_MAX_BYTES";
/// The session config entry (`SessionOptions.add_session_config_entry`) of the plugin's budget.
pub const CONFIG_KEY: &str = "ditac.max_bytes";

/// Parses a byte count: digits with an optional suffix K, M, G, T (powers of 1024; "KiB", "MB"...
/// are read the same way).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "\"{text}\": expected a byte count such as 1073741824 or 1G"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("\"{text}\": expected a byte count such as 1073741824 or 1G"))?;
    n.checked_mul(1u64 << shift)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("\"{text}\": expected a positive byte count below 2^64"))
}

/// The budget from the environment ([`ENV_VAR`]), else the default. A malformed value is an error.
pub fn from_env() -> Result<u64, String> {
    match std::env::var(ENV_VAR) {
        Ok(v) => parse_bytes(&v).map_err(|e| format!("{ENV_VAR}={e}")),
        Err(_) => Ok(DEFAULT_MAX_BYTES),
    }
}

/// `count` values of `size` bytes, or None when that overflows.
pub fn bytes_of(count: u128, size: usize) -> Option<u128> {
    count.checked_mul(size as u128)
}

/// The product of `dims` (checked), or None when it overflows or a dim is negative.
pub fn elements(dims: &[i64]) -> Option<u128> {
    dims.iter().try_fold(1u128, |acc, &d| {
        u128::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// Checks that `bytes` (None: beyond any count) fits in `limit`; the error names `what`, the size and
/// the budget.
pub fn check(what: &str, bytes: Option<u128>, limit: u64) -> Result<(), DitacError> {
    match bytes {
        Some(b) if b <= limit as u128 => Ok(()),
        _ => Err(DitacError::TooLarge {
            what: what.to_string(),
            bytes: bytes.map_or_else(|| "more than 2^128".to_string(), |b| b.to_string()),
            limit,
        }),
    }
}

/// A vector of `n` copies of `value`, allocated fallibly: an allocation failure is an error naming
/// `what`, not an abort.
pub fn try_vec<T: Clone>(n: usize, value: T, what: &str) -> Result<Vec<T>, DitacError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| DitacError::OutOfMemory {
            what: what.to_string(),
            bytes: (n as u128 * std::mem::size_of::<T>() as u128).to_string(),
        })?;
    v.resize(n, value);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counts_and_suffixes() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("6G"), Ok(6 << 30));
        assert_eq!(parse_bytes("512 MiB"), Ok(512 << 20));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("1X").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }

    #[test]
    fn checks_name_the_sizes() {
        assert_eq!(elements(&[1 << 62, 4]), Some(1u128 << 64));
        assert_eq!(elements(&[-1, -9]), None);
        let e = check("node 'x': tables", Some(2048), 1024)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tables: 2048 bytes needed"), "{e}");
        assert!(e.contains("budget of 1024 bytes"), "{e}");
        assert!(check("t", Some(1024), 1024).is_ok());
        assert!(check("t", None, u64::MAX).is_err());
    }
}
