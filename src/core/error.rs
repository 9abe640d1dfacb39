//! Typed errors of the math core. Every variant names the offending value and what was expected,
//! so that the plugin and the CLI can pass the message on verbatim.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum DitacError {
    /// An attribute/parameter with a bad value: `name`, the value as text, what was expected.
    #[error("attribute '{name}' = {value}: expected {expected}")]
    BadAttribute {
        name: &'static str,
        value: String,
        expected: String,
    },
    /// An attribute given with another type than ops.md's (`detail`: what the source found, or "").
    #[error("attribute '{name}' has no {ty} value: expected an attribute of type {ty}{detail}")]
    AttributeType {
        name: &'static str,
        ty: &'static str,
        detail: String,
    },
    /// An input tensor (theta, B, table, X) with a bad shape or content.
    #[error("input '{name}' {problem}")]
    BadInput { name: &'static str, problem: String },
    /// A size beyond the memory budget (`core::budget`).
    #[error("{what}: {bytes} bytes needed, above the memory budget of {limit} bytes (raise it with the session config entry ditac.max_bytes, DITAC_MAX_BYTES or --max-bytes)")]
    TooLarge {
        what: String,
        bytes: String,
        limit: u64,
    },
    /// An allocation the allocator refused.
    #[error("{what}: cannot allocate {bytes} bytes")]
    OutOfMemory { what: String, bytes: String },
}

impl DitacError {
    pub fn attr(
        name: &'static str,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        DitacError::BadAttribute {
            name,
            value: value.to_string(),
            expected: expected.into(),
        }
    }
    /// `name` is not of type `ty`; `found` says what it is instead, when the source can tell.
    pub fn attr_type(name: &'static str, ty: &'static str, found: &str) -> Self {
        DitacError::AttributeType {
            name,
            ty,
            detail: if found.is_empty() {
                String::new()
            } else {
                format!(" ({found})")
            },
        }
    }
    pub fn input(name: &'static str, problem: impl Into<String>) -> Self {
        DitacError::BadInput {
            name,
            problem: problem.into(),
        }
    }
}

pub type Result<T, E = DitacError> = std::result::Result<T, E>;

/// The message a panic carried (`panic!` with a literal or a formatted string), for the places
/// that catch panics at a boundary (the plugin's FFI, the C API, the CUDA glue) and report them.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}
