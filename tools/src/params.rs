//! Named float tensors from parameter files: safetensors (PyTorch's `save_file`) and NumPy `.npz`
//! (`np.savez`, compressed or not). Every tensor is converted to f32; integer tensors are kept as
//! f32 too (data files carry class indices that way).

use anyhow::{anyhow, bail, Context, Result};
use ndarray::{ArrayD, IxDyn};
use std::collections::BTreeMap;
use std::path::Path;

/// One tensor: shape and row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape/data mismatch"
        );
        Tensor { shape, data }
    }
}

/// Tensors by name, in name order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    pub tensors: BTreeMap<String, Tensor>,
}

/// The file formats we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    Npz,
}

impl Format {
    /// By content: a zip archive is `.npz`; otherwise safetensors (8-byte header length + JSON).
    fn sniff(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
            return Some(Format::Npz);
        }
        if bytes.len() >= 9 {
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
            if n > 1 && n <= (bytes.len() - 8) as u64 && bytes[8] == b'{' {
                return Some(Format::Safetensors);
            }
        }
        None
    }
}

impl Params {
    /// Reads a safetensors or .npz file (recognised by content, not name).
    pub fn load(path: &Path) -> Result<Params> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read parameters {}", path.display()))?;
        crate::output::record_input(path);
        let what = || format!("parameters {}", path.display());
        match Format::sniff(&bytes) {
            Some(Format::Safetensors) => Self::from_safetensors(&bytes).with_context(what),
            Some(Format::Npz) => Self::from_npz(&bytes).with_context(what),
            None => bail!(
                "{} is neither a safetensors file nor a NumPy .npz archive",
                what()
            ),
        }
    }

    pub fn from_safetensors(bytes: &[u8]) -> Result<Params> {
        use safetensors::Dtype;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| anyhow!("not a valid safetensors file: {e}"))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => le_chunks::<4>(raw).map(f32::from_le_bytes).collect(),
                Dtype::F64 => le_chunks::<8>(raw)
                    .map(|b| f64::from_le_bytes(b) as f32)
                    .collect(),
                Dtype::F16 => le_chunks::<2>(raw)
                    .map(|b| half::f16::from_le_bytes(b).to_f32())
                    .collect(),
                Dtype::BF16 => le_chunks::<2>(raw)
                    .map(|b| half::bf16::from_le_bytes(b).to_f32())
                    .collect(),
                Dtype::I64 => le_chunks::<8>(raw)
                    .map(|b| i64::from_le_bytes(b) as f32)
                    .collect(),
                Dtype::I32 => le_chunks::<4>(raw)
                    .map(|b| i32::from_le_bytes(b) as f32)
                    .collect(),
                other => {
                    bail!("tensor \"{name}\" has dtype {other:?}: expected a float or integer type")
                }
            };
            tensors.insert(name.clone(), Tensor::new(view.shape().to_vec(), data));
        }
        Ok(Params { tensors })
    }

    pub fn from_npz(bytes: &[u8]) -> Result<Params> {
        let mut npz = ndarray_npy::NpzReader::new(std::io::Cursor::new(bytes))
            .map_err(|e| anyhow!("not a valid .npz archive: {e}"))?;
        let names = npz
            .names()
            .map_err(|e| anyhow!("not a valid .npz archive: {e}"))?;
        let mut tensors = BTreeMap::new();
        for name in names {
            let key = name.strip_suffix(".npy").unwrap_or(&name).to_owned();
            let arr = read_npz_any(&mut npz, &name).with_context(|| format!("array \"{key}\""))?;
            let shape = arr.shape().to_vec();
            let data = arr.as_standard_layout().iter().copied().collect();
            tensors.insert(key, Tensor::new(shape, data));
        }
        Ok(Params { tensors })
    }

    /// The tensor `key`, or an error listing what the file has.
    pub fn get(&self, key: &str) -> Result<&Tensor> {
        self.tensors.get(key).ok_or_else(|| {
            let have: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
            anyhow!("no tensor \"{key}\" (the file has: {})", have.join(", "))
        })
    }

    pub fn insert(&mut self, key: impl Into<String>, t: Tensor) {
        self.tensors.insert(key.into(), t);
    }

    /// Writes an uncompressed `.npz` (float32 arrays), readable by `np.load`.
    pub fn save_npz(&self, path: &Path) -> Result<()> {
        crate::output::Output::new(path)?.write_with(|file| {
            let mut w = ndarray_npy::NpzWriter::new(file);
            for (k, t) in &self.tensors {
                let a = ArrayD::from_shape_vec(IxDyn(&t.shape), t.data.clone())?;
                w.add_array(k.as_str(), &a)
                    .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
            }
            w.finish()
                .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
            Ok(())
        })
    }

    /// Writes a safetensors file (float32), readable by `safetensors.torch.load_file`.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    t.shape.clone(),
                )
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
            .iter()
            .map(|(k, b, s)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| anyhow!("tensor {k}: {e}"))
            })
            .collect::<Result<_>>()?;
        let bytes = safetensors::serialize(views, None)
            .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
        crate::output::Output::new(path)?.write_bytes(&bytes)
    }
}

fn le_chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N).map(|c| c.try_into().unwrap())
}

fn read_npz_any<R: std::io::Read + std::io::Seek>(
    npz: &mut ndarray_npy::NpzReader<R>,
    name: &str,
) -> Result<ArrayD<f32>> {
    macro_rules! try_type {
        ($t:ty) => {
            if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<$t>, IxDyn>(name) {
                return Ok(a.mapv(|v| v as f32));
            }
        };
    }
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<f32>, IxDyn>(name) {
        return Ok(a);
    }
    try_type!(f64);
    try_type!(i64);
    try_type!(i32);
    try_type!(u8);
    try_type!(i8);
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<bool>, IxDyn>(name) {
        return Ok(a.mapv(|v| v as u8 as f32));
    }
    bail!("unsupported dtype or malformed array (expected float32/float64/int/bool)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Params {
        let mut p = Params::default();
        p.insert(
            "0.weight",
            Tensor::new(vec![2, 3], vec![1.0, -2.0, 3.5, 0.0, 1e-3, 7.0]),
        );
        p.insert(
            "1.thetas",
            Tensor::new(vec![1, 4], vec![0.1, 0.2, -0.3, 0.4]),
        );
        p
    }

    #[test]
    fn npz_and_safetensors_round_trip() {
        let dir = std::env::temp_dir().join(format!("ditac-params-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["p.npz", "p.safetensors"] {
            let path = dir.join(name);
            if name.ends_with("npz") {
                sample().save_npz(&path).unwrap();
            } else {
                sample().save_safetensors(&path).unwrap();
            }
            assert_eq!(Params::load(&path).unwrap(), sample(), "{name}");
        }
        let bad = dir.join("bad.bin");
        std::fs::write(&bad, b"hello world, not params").unwrap();
        let msg = format!("{:#}", Params::load(&bad).unwrap_err());
        assert!(msg.contains("neither a safetensors"), "{msg}");
        let msg = format!("{:#}", sample().get("2.weight").unwrap_err());
        assert!(
            msg.contains("\"2.weight\"") && msg.contains("0.weight"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
