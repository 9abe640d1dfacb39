//! Reading ONNX protobufs, in one place (after tract's `pb_helpers.rs`): the op names of the
//! `ai.ditac` domain, declared dims of a value, the default-domain opset of a model, typed
//! attribute getters whose errors name the node and the attribute, and external data read into the
//! model.

pub use crate::transform::model_file::inline_external_data;
use crate::transform::node_label;
use anyhow::{bail, Result};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_shape_proto::dimension::Value as DimValue;
use onnx_protobuf::{type_proto, AttributeProto, ModelProto, NodeProto, ValueInfoProto};

/// The custom-op domain and its opset version.
pub const DITAC_DOMAIN: &str = "ai.ditac";
pub const DITAC_OPSET: i64 = 1;

/// The op types of the `ai.ditac` domain.
pub const DITAC: &str = "DiTAC";
pub const DITAC_LUT: &str = "DiTACLut";
pub const DITAC_GRAD: &str = "DiTACGrad";

/// A declared dimension: a fixed size (≥ 0), a symbol, or neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    Symbolic(String),
    Unknown,
}

impl Dim {
    /// The size, if fixed.
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(d) => Some(*d),
            _ => None,
        }
    }
}

/// The declared dims of a tensor value (None: not a tensor, or no shape declared).
pub fn declared_dims(v: &ValueInfoProto) -> Option<Vec<Dim>> {
    let type_proto::Value::TensorType(t) = v.type_.value.as_ref()? else {
        return None;
    };
    let shape = t.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(DimValue::DimValue(v)) if *v >= 0 => Dim::Fixed(*v as usize),
                Some(DimValue::DimParam(p)) if !p.is_empty() => Dim::Symbolic(p.clone()),
                _ => Dim::Unknown,
            })
            .collect(),
    )
}

/// The element type of a tensor value (None: not a tensor).
pub fn declared_elem_type(v: &ValueInfoProto) -> Option<i32> {
    match v.type_.value.as_ref()? {
        type_proto::Value::TensorType(t) => Some(t.elem_type),
        _ => None,
    }
}

/// The model's default-domain (`""` or `ai.onnx`) opset version (0: none imported).
pub fn default_opset(model: &ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version)
}

/// The attribute `name` of `n`, if present.
pub fn attr<'n>(n: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

macro_rules! getter {
    ($(#[$doc:meta])* $fn:ident, $ty:ty, $kind:ident, |$a:ident| $get:expr) => {
        $(#[$doc])*
        pub fn $fn(n: &NodeProto, name: &str) -> Result<Option<$ty>> {
            let Some($a) = attr(n, name) else {
                return Ok(None);
            };
            match $a.type_.enum_value() {
                Ok(AttributeType::$kind) | Ok(AttributeType::UNDEFINED) => Ok(Some($get)),
                other => bail!(
                    "node '{}' ({}): attribute \"{name}\" is {}, expected {}",
                    node_label(n),
                    n.op_type,
                    other.map_or_else(|v| format!("of type {v}"), |t| format!("{t:?}")),
                    stringify!($kind)
                ),
            }
        }
    };
}

getter!(
    /// An int attribute.
    attr_int, i64, INT, |a| a.i
);
getter!(
    /// A float attribute.
    attr_float, f32, FLOAT, |a| a.f
);
getter!(
    /// An ints attribute.
    attr_ints, Vec<i64>, INTS, |a| a.ints.clone()
);
getter!(
    /// A string attribute (UTF-8, lossily).
    attr_string, String, STRING, |a| String::from_utf8_lossy(&a.s).into_owned()
);

/// An int attribute, `default` when absent.
pub fn attr_int_or(n: &NodeProto, name: &str, default: i64) -> Result<i64> {
    Ok(attr_int(n, name)?.unwrap_or(default))
}

/// A float attribute, `default` when absent.
pub fn attr_float_or(n: &NodeProto, name: &str, default: f32) -> Result<f32> {
    Ok(attr_float(n, name)?.unwrap_or(default))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{attribute, Attr};

    #[test]
    fn typed_getters_name_node_and_attribute() {
        let mut n = NodeProto::new();
        n.name = "conv1".into();
        n.op_type = "Conv".into();
        n.attribute.push(attribute("group", &Attr::Int(2)));
        n.attribute
            .push(attribute("pads", &Attr::Ints(vec![1, 1, 1, 1])));
        assert_eq!(attr_int_or(&n, "group", 1).unwrap(), 2);
        assert_eq!(attr_int_or(&n, "missing", 7).unwrap(), 7);
        assert_eq!(attr_ints(&n, "pads").unwrap(), Some(vec![1, 1, 1, 1]));
        let err = format!("{:#}", attr_int(&n, "pads").unwrap_err());
        assert!(
            err.contains("conv1") && err.contains("\"pads\"") && err.contains("INTS"),
            "{err}"
        );
    }
}
