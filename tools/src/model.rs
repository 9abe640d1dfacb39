//! A small ONNX model writer on `onnx-protobuf`, for the tests and the tools: a single graph with
//! typed inputs/outputs, initializers and nodes, opset imports (the default domain and `ai.ditac`
//! v1), IR version 9 (accepted by ONNX Runtime 1.17 … newest).
//!
//! `onnx-protobuf` is generated from the proto3 form of onnx.proto, which omits scalar fields equal
//! to zero. ONNX Runtime reads attributes with proto2 presence (`has_i()`), so an attribute `a = 0.0`
//! or `lut_size = 0` written plainly would look valueless. The writer therefore puts zero-valued
//! scalars on the wire explicitly.

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::{
    type_proto, AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use ditac::core::{Attrs, BasisKind, Interpolation, Variant};

/// The IR version the writer stamps (ORT 1.19 refuses > 10).
pub const IR_VERSION: i64 = 9;
pub use crate::onnx::{DITAC_DOMAIN, DITAC_OPSET};
/// The default-domain opset the writer imports unless told otherwise.
pub const DEFAULT_OPSET: i64 = 20;

/// Tensor element types the writer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    Float,
    Float16,
    Double,
    Int64,
    Bool,
}

impl ElemType {
    pub fn data_type(self) -> DataType {
        match self {
            ElemType::Float => DataType::FLOAT,
            ElemType::Float16 => DataType::FLOAT16,
            ElemType::Double => DataType::DOUBLE,
            ElemType::Int64 => DataType::INT64,
            ElemType::Bool => DataType::BOOL,
        }
    }
}

/// A node attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Float(f32),
    Int(i64),
    Str(String),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
}

impl From<f32> for Attr {
    fn from(v: f32) -> Self {
        Attr::Float(v)
    }
}
impl From<i64> for Attr {
    fn from(v: i64) -> Self {
        Attr::Int(v)
    }
}
impl From<&str> for Attr {
    fn from(v: &str) -> Self {
        Attr::Str(v.to_string())
    }
}

/// One attribute, with zero-valued scalars put on the wire explicitly (see the module notes).
pub fn attribute(name: &str, v: &Attr) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    match v {
        Attr::Float(f) => {
            a.type_ = AttributeType::FLOAT.into();
            if *f == 0.0 && f.to_bits() == 0 {
                // +0.0: explicit field 2 (fixed32).
                a.special_fields.mut_unknown_fields().add_fixed32(2, 0);
            } else {
                a.f = *f;
            }
        }
        Attr::Int(i) => {
            a.type_ = AttributeType::INT.into();
            if *i == 0 {
                a.special_fields.mut_unknown_fields().add_varint(3, 0);
            } else {
                a.i = *i;
            }
        }
        Attr::Str(s) => {
            a.type_ = AttributeType::STRING.into();
            if s.is_empty() {
                a.special_fields
                    .mut_unknown_fields()
                    .add_length_delimited(4, Vec::new());
            } else {
                a.s = s.as_bytes().to_vec();
            }
        }
        Attr::Floats(v) => {
            a.type_ = AttributeType::FLOATS.into();
            a.floats = v.clone();
        }
        Attr::Ints(v) => {
            a.type_ = AttributeType::INTS.into();
            a.ints = v.clone();
        }
    }
    a
}

/// A tensor type with `dims`; a negative dim is symbolic (named `<name>_d<i>`).
pub fn value_info(name: &str, ty: ElemType, dims: &[i64]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for (i, &d) in dims.iter().enumerate() {
        let mut dim = Dimension::new();
        dim.value = Some(if d >= 0 {
            dimension::Value::DimValue(d)
        } else {
            dimension::Value::DimParam(format!("{name}_d{i}"))
        });
        shape.dim.push(dim);
    }
    let mut t = type_proto::Tensor::new();
    t.elem_type = ty.data_type() as i32;
    t.shape = Some(shape).into();
    let mut tp = TypeProto::new();
    tp.value = Some(type_proto::Value::TensorType(t));
    let mut vi = ValueInfoProto::new();
    vi.name = name.to_string();
    vi.type_ = Some(tp).into();
    vi
}

/// Builds one ONNX model.
#[derive(Debug, Clone)]
pub struct ModelBuilder {
    graph: GraphProto,
    opsets: Vec<(String, i64)>,
}

impl ModelBuilder {
    /// An empty graph importing the default domain (opset 20) and `ai.ditac` v1.
    pub fn new(graph_name: &str) -> Self {
        let mut graph = GraphProto::new();
        graph.name = graph_name.to_string();
        ModelBuilder {
            graph,
            opsets: vec![
                (String::new(), DEFAULT_OPSET),
                (DITAC_DOMAIN.to_string(), DITAC_OPSET),
            ],
        }
    }

    /// Sets (or adds) the imported opset version of `domain` ("" = the default domain).
    pub fn opset(&mut self, domain: &str, version: i64) -> &mut Self {
        match self.opsets.iter_mut().find(|(d, _)| d == domain) {
            Some(e) => e.1 = version,
            None => self.opsets.push((domain.to_string(), version)),
        }
        self
    }

    /// A graph input; negative dims are symbolic.
    pub fn input(&mut self, name: &str, ty: ElemType, dims: &[i64]) -> &mut Self {
        self.graph.input.push(value_info(name, ty, dims));
        self
    }

    /// A graph output; negative dims are symbolic.
    pub fn output(&mut self, name: &str, ty: ElemType, dims: &[i64]) -> &mut Self {
        self.graph.output.push(value_info(name, ty, dims));
        self
    }

    /// Value info of an intermediate value.
    pub fn value(&mut self, name: &str, ty: ElemType, dims: &[i64]) -> &mut Self {
        self.graph.value_info.push(value_info(name, ty, dims));
        self
    }

    /// An initializer with raw little-endian bytes of `ty`.
    pub fn initializer_raw(
        &mut self,
        name: &str,
        ty: ElemType,
        dims: &[usize],
        raw: Vec<u8>,
    ) -> &mut Self {
        let mut t = TensorProto::new();
        t.name = name.to_string();
        t.data_type = ty.data_type() as i32;
        t.dims = dims.iter().map(|&d| d as i64).collect();
        t.raw_data = raw;
        self.graph.initializer.push(t);
        self
    }

    /// A float32 initializer.
    pub fn initializer_f32(&mut self, name: &str, dims: &[usize], data: &[f32]) -> &mut Self {
        assert_eq!(
            dims.iter().product::<usize>(),
            data.len(),
            "initializer '{name}': dims vs data"
        );
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer_raw(name, ElemType::Float, dims, raw)
    }

    /// A float64 initializer.
    pub fn initializer_f64(&mut self, name: &str, dims: &[usize], data: &[f64]) -> &mut Self {
        assert_eq!(
            dims.iter().product::<usize>(),
            data.len(),
            "initializer '{name}': dims vs data"
        );
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer_raw(name, ElemType::Double, dims, raw)
    }

    /// An int64 initializer.
    pub fn initializer_i64(&mut self, name: &str, dims: &[usize], data: &[i64]) -> &mut Self {
        assert_eq!(
            dims.iter().product::<usize>(),
            data.len(),
            "initializer '{name}': dims vs data"
        );
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer_raw(name, ElemType::Int64, dims, raw)
    }

    /// A node. `domain` "" is the default domain; an input named "" is an omitted optional input.
    pub fn node(
        &mut self,
        op_type: &str,
        domain: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: &[(&str, Attr)],
    ) -> &mut Self {
        let mut n = NodeProto::new();
        n.op_type = op_type.to_string();
        n.domain = domain.to_string();
        n.name = name.to_string();
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = outputs.iter().map(|s| s.to_string()).collect();
        n.attribute = attrs.iter().map(|(k, v)| attribute(k, v)).collect();
        self.graph.node.push(n);
        self
    }

    /// Appends a node built elsewhere (attributes copied from another node, say).
    pub fn raw_node(&mut self, node: NodeProto) -> &mut Self {
        self.graph.node.push(node);
        self
    }

    /// The ModelProto.
    pub fn build(&self) -> ModelProto {
        let mut m = ModelProto::new();
        m.ir_version = IR_VERSION;
        m.producer_name = "ditac".to_string();
        m.producer_version = env!("CARGO_PKG_VERSION").to_string();
        m.graph = Some(self.graph.clone()).into();
        for (domain, version) in &self.opsets {
            let mut o = OperatorSetIdProto::new();
            o.domain = domain.clone();
            o.version = *version;
            m.opset_import.push(o);
        }
        m
    }

    /// The serialized model.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.build()
            .write_to_bytes()
            .expect("serialising an in-memory ModelProto cannot fail")
    }

    /// Writes the model to `path`.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }
}

pub fn basis_str(k: BasisKind) -> &'static str {
    match k {
        BasisKind::Qr => "qr",
        BasisKind::Rref => "rref",
        BasisKind::Sparse => "sparse",
        BasisKind::Explicit => "explicit",
    }
}

pub fn variant_str(v: Variant) -> &'static str {
    match v {
        Variant::Ditac => "ditac",
        Variant::Leaky => "leaky",
        Variant::Ge => "ge",
    }
}

pub fn interpolation_str(i: Interpolation) -> &'static str {
    match i {
        Interpolation::Nearest => "nearest",
        Interpolation::Linear => "linear",
    }
}

/// The node attributes of `DiTAC` / `DiTACGrad` for `attrs` (every attribute written).
pub fn ditac_attrs(attrs: &Attrs) -> Vec<(&'static str, Attr)> {
    let mut v = lut_attrs(attrs);
    v.extend([
        ("tess", Attr::Int(attrs.tess)),
        ("zero_boundary", Attr::Int(attrs.zero_boundary)),
        ("basis", Attr::from(basis_str(attrs.basis))),
        ("lut_size", Attr::Int(attrs.lut_size)),
    ]);
    v
}

/// The node attributes of `DiTACLut` for `attrs`.
pub fn lut_attrs(attrs: &Attrs) -> Vec<(&'static str, Attr)> {
    vec![
        ("a", Attr::Float(attrs.a)),
        ("b", Attr::Float(attrs.b)),
        ("variant", Attr::from(variant_str(attrs.variant))),
        ("alpha", Attr::Float(attrs.alpha)),
        (
            "interpolation",
            Attr::from(interpolation_str(attrs.interpolation)),
        ),
        ("channel_axis", Attr::Int(attrs.channel_axis)),
    ]
}
