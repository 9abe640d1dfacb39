//! JSON output helpers: non-finite numbers are written as the strings "nan", "inf", "-inf".

use serde_json::Value;

pub fn num(v: f64) -> Value {
    if v.is_nan() {
        Value::String("nan".into())
    } else if v == f64::INFINITY {
        Value::String("inf".into())
    } else if v == f64::NEG_INFINITY {
        Value::String("-inf".into())
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

/// An f32 as the shortest decimal that round-trips it.
pub fn num32(v: f32) -> Value {
    if !v.is_finite() {
        return num(v as f64);
    }
    // The shortest f32 text parsed as f64 keeps the float32 value when read back as float32.
    let s = format!("{v}");
    num(s.parse::<f64>().unwrap_or(v as f64))
}
