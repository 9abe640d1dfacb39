//! ONNX Runtime's training checkpoint: a flatbuffer with file identifier `"ODTC"`, schema
//! `ort_training_checkpoint.fbs` (tensors from `ort.fbs`):
//!
//! ```text
//! table Checkpoint      { version:int32; module_state:ModuleState; optimizer_groups:[OptimizerGroup];
//!                         property_bag:PropertyBag; }
//! table ModuleState     { requires_grad_params:[Tensor]; frozen_params:[Tensor];
//!                         is_nominal_state:bool; has_external_data:bool; }
//! table OptimizerGroup  { group_name:string; step:int64; initial_learning_rate:float;
//!                         optimizer_states:[ParameterOptimizerState]; }
//! table PropertyBag     { ints:[IntProperty]; floats:[FloatProperty]; strings:[StringProperty]; }
//! table Tensor          { name:string; doc_string:string; dims:[int64]; data_type:int32;
//!                         raw_data:[uint8]; string_data:[string]; }
//! ```
//!
//! The writer uses the `flatbuffers` crate's builder with hand-written field slots (no `flatc` on
//! these machines); the reader is a small bounds-checked walker over the same layout. Like ONNX
//! Runtime's generator we write checkpoint version 2, the parameters, no optimizer groups (ONNX
//! Runtime creates zero moments on first use), and a property bag with our settings.

use crate::params::{Params, Tensor};
use anyhow::{bail, Context, Result};
use flatbuffers::{FlatBufferBuilder, WIPOffset};

/// The checkpoint format version ONNX Runtime 1.19 writes and reads.
pub const VERSION: i32 = 2;
const IDENT: &str = "ODTC";
const FLOAT: i32 = 1;

/// One float tensor of the checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct CkptTensor {
    pub name: String,
    pub dims: Vec<i64>,
    pub data: Vec<f32>,
}

/// An optimizer group as read (we write none).
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerGroup {
    pub name: String,
    pub step: i64,
    pub initial_lr: f32,
    /// (parameter, number of moment tensors)
    pub states: Vec<(String, usize)>,
}

/// The contents of a checkpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpoint {
    pub trainable: Vec<CkptTensor>,
    pub frozen: Vec<CkptTensor>,
    pub ints: Vec<(String, i64)>,
    pub floats: Vec<(String, f32)>,
    pub strings: Vec<(String, String)>,
}

/// Field slot i of a table lives at vtable offset 4 + 2i.
const fn slot(i: u16) -> u16 {
    4 + 2 * i
}

type Off = WIPOffset<flatbuffers::TableFinishedWIPOffset>;

fn write_tensor<'a>(b: &mut FlatBufferBuilder<'a>, t: &CkptTensor) -> Off {
    let name = b.create_string(&t.name);
    let dims = b.create_vector(&t.dims);
    let raw: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let raw = b.create_vector(&raw);
    let s = b.start_table();
    b.push_slot_always(slot(0), name);
    b.push_slot_always(slot(2), dims);
    b.push_slot::<i32>(slot(3), FLOAT, 0);
    b.push_slot_always(slot(4), raw);
    b.end_table(s)
}

impl Checkpoint {
    /// The parameters as named tensors (shapes as stored).
    pub fn params(&self) -> Params {
        let mut p = Params::default();
        for t in self.trainable.iter().chain(&self.frozen) {
            let shape = t.dims.iter().map(|&d| d as usize).collect();
            p.insert(t.name.clone(), Tensor::new(shape, t.data.clone()));
        }
        p
    }

    /// Serialises the checkpoint.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = FlatBufferBuilder::with_capacity(1024);
        let tr: Vec<Off> = self
            .trainable
            .iter()
            .map(|t| write_tensor(&mut b, t))
            .collect();
        let fr: Vec<Off> = self
            .frozen
            .iter()
            .map(|t| write_tensor(&mut b, t))
            .collect();
        let tr = b.create_vector(&tr);
        let fr = b.create_vector(&fr);
        let s = b.start_table();
        b.push_slot_always(slot(0), tr);
        b.push_slot_always(slot(1), fr);
        b.push_slot::<bool>(slot(2), false, false);
        b.push_slot::<bool>(slot(3), false, false);
        let module = b.end_table(s);

        let ints: Vec<Off> = self
            .ints
            .iter()
            .map(|(k, v)| {
                let k = b.create_string(k);
                let s = b.start_table();
                b.push_slot::<i64>(slot(1), *v, 0);
                b.push_slot_always(slot(0), k);
                b.end_table(s)
            })
            .collect();
        let floats: Vec<Off> = self
            .floats
            .iter()
            .map(|(k, v)| {
                let k = b.create_string(k);
                let s = b.start_table();
                b.push_slot_always(slot(0), k);
                b.push_slot::<f32>(slot(1), *v, 0.0);
                b.end_table(s)
            })
            .collect();
        let strings: Vec<Off> = self
            .strings
            .iter()
            .map(|(k, v)| {
                let k = b.create_string(k);
                let v = b.create_string(v);
                let s = b.start_table();
                b.push_slot_always(slot(0), k);
                b.push_slot_always(slot(1), v);
                b.end_table(s)
            })
            .collect();
        let (ints, floats, strings) = (
            b.create_vector(&ints),
            b.create_vector(&floats),
            b.create_vector(&strings),
        );
        let s = b.start_table();
        b.push_slot_always(slot(0), ints);
        b.push_slot_always(slot(1), floats);
        b.push_slot_always(slot(2), strings);
        let bag = b.end_table(s);

        let s = b.start_table();
        b.push_slot::<i32>(slot(0), VERSION, 0);
        b.push_slot_always(slot(1), module);
        b.push_slot_always(slot(3), bag);
        let root = b.end_table(s);
        b.finish(root, Some(IDENT));
        b.finished_data().to_vec()
    }

    /// Parses a checkpoint (as written by us or by ONNX Runtime).
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint> {
        Self::parse(bytes).context("not a valid ONNX Runtime training checkpoint")
    }

    /// Parses the checkpoint and also returns its optimizer groups.
    pub fn from_bytes_with_groups(bytes: &[u8]) -> Result<(Checkpoint, Vec<OptimizerGroup>)> {
        let c = Self::from_bytes(bytes)?;
        let r = Reader(bytes);
        let root = r.table(r.u32(0)? as usize)?;
        let mut groups = Vec::new();
        if let Some(v) = root.vector(&r, 2)? {
            for i in 0..v.1 {
                let g = r.table(r.indirect(v.0 + 4 * i)?)?;
                let name = g.string(&r, 0)?.unwrap_or_default();
                let step = g.scalar(&r, 1, 8)?.map_or(0, |p| r.i64(p).unwrap_or(0));
                let lr = match g.scalar(&r, 2, 4)? {
                    Some(p) => f32::from_bits(r.u32(p)?),
                    None => 0.0,
                };
                let mut states = Vec::new();
                if let Some(sv) = g.vector(&r, 3)? {
                    for j in 0..sv.1 {
                        let st = r.table(r.indirect(sv.0 + 4 * j)?)?;
                        let pname = st.string(&r, 0)?.unwrap_or_default();
                        let n = st.vector(&r, 1)?.map_or(0, |m| m.1);
                        states.push((pname, n));
                    }
                }
                groups.push(OptimizerGroup {
                    name,
                    step,
                    initial_lr: lr,
                    states,
                });
            }
        }
        Ok((c, groups))
    }

    fn parse(bytes: &[u8]) -> Result<Checkpoint> {
        let r = Reader(bytes);
        if bytes.len() < 8 || &bytes[4..8] != IDENT.as_bytes() {
            bail!("file identifier is not \"ODTC\"");
        }
        let root = r.table(r.u32(0)? as usize)?;
        let version = match root.scalar(&r, 0, 4)? {
            Some(p) => r.u32(p)? as i32,
            None => 0,
        };
        if version != VERSION {
            bail!("checkpoint version {version}: expected {VERSION}");
        }
        let mut c = Checkpoint::default();
        if let Some(ms) = root.table_field(&r, 1)? {
            if let Some(p) = ms.scalar(&r, 3, 1)? {
                if r.byte(p)? != 0 {
                    bail!("tensors in external data files are not supported");
                }
            }
            for (slot_i, dst) in [(0u16, &mut c.trainable), (1, &mut c.frozen)] {
                if let Some(v) = ms.vector(&r, slot_i)? {
                    for i in 0..v.1 {
                        let t = r.table(r.indirect(v.0 + 4 * i)?)?;
                        dst.push(read_tensor(&r, &t)?);
                    }
                }
            }
        }
        if let Some(bag) = root.table_field(&r, 3)? {
            if let Some(v) = bag.vector(&r, 0)? {
                for i in 0..v.1 {
                    let t = r.table(r.indirect(v.0 + 4 * i)?)?;
                    let val = t.scalar(&r, 1, 8)?.map_or(Ok(0), |p| r.i64(p))?;
                    c.ints.push((t.string(&r, 0)?.unwrap_or_default(), val));
                }
            }
            if let Some(v) = bag.vector(&r, 1)? {
                for i in 0..v.1 {
                    let t = r.table(r.indirect(v.0 + 4 * i)?)?;
                    let val = match t.scalar(&r, 1, 4)? {
                        Some(p) => f32::from_bits(r.u32(p)?),
                        None => 0.0,
                    };
                    c.floats.push((t.string(&r, 0)?.unwrap_or_default(), val));
                }
            }
            if let Some(v) = bag.vector(&r, 2)? {
                for i in 0..v.1 {
                    let t = r.table(r.indirect(v.0 + 4 * i)?)?;
                    c.strings.push((
                        t.string(&r, 0)?.unwrap_or_default(),
                        t.string(&r, 1)?.unwrap_or_default(),
                    ));
                }
            }
        }
        Ok(c)
    }
}

fn read_tensor(r: &Reader, t: &Table) -> Result<CkptTensor> {
    let name = t.string(r, 0)?.unwrap_or_default();
    let dt = match t.scalar(r, 3, 4)? {
        Some(p) => r.u32(p)? as i32,
        None => 0,
    };
    if dt != FLOAT {
        bail!("tensor \"{name}\" has data type {dt}: only float (1) is supported");
    }
    let mut dims = Vec::new();
    if let Some(v) = t.vector(r, 2)? {
        for i in 0..v.1 {
            dims.push(r.i64(v.0 + 8 * i)?);
        }
    }
    let n: i64 = dims.iter().product();
    let raw = t.vector(r, 4)?.unwrap_or((0, 0));
    if dims.iter().any(|&d| d < 0) || raw.1 as i64 != 4 * n {
        bail!(
            "tensor \"{name}\": {} bytes of data for dims {dims:?}",
            raw.1
        );
    }
    let bytes = r.slice(raw.0, raw.1)?;
    let data = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(CkptTensor { name, dims, data })
}

/// A bounds-checked view of a flatbuffer.
struct Reader<'a>(&'a [u8]);

struct Table {
    pos: usize,
    vt: usize,
    vt_len: usize,
}

impl Reader<'_> {
    fn slice(&self, p: usize, n: usize) -> Result<&[u8]> {
        self.0
            .get(p..p.checked_add(n).context("offset overflow")?)
            .with_context(|| format!("offset {p}+{n} past the end ({} bytes)", self.0.len()))
    }
    fn byte(&self, p: usize) -> Result<u8> {
        Ok(self.slice(p, 1)?[0])
    }
    fn u16(&self, p: usize) -> Result<u16> {
        let b = self.slice(p, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&self, p: usize) -> Result<u32> {
        let b = self.slice(p, 4)?;
        Ok(u32::from_le_bytes(b.try_into().unwrap()))
    }
    fn i64(&self, p: usize) -> Result<i64> {
        let b = self.slice(p, 8)?;
        Ok(i64::from_le_bytes(b.try_into().unwrap()))
    }
    /// The position an offset stored at `p` points to.
    fn indirect(&self, p: usize) -> Result<usize> {
        Ok(p + self.u32(p)? as usize)
    }
    fn table(&self, pos: usize) -> Result<Table> {
        let soff = self.u32(pos)? as i32 as i64;
        let vt = pos as i64 - soff;
        if vt < 0 {
            bail!("bad vtable offset at {pos}");
        }
        let vt = vt as usize;
        let vt_len = self.u16(vt)? as usize;
        Ok(Table { pos, vt, vt_len })
    }
}

impl Table {
    /// The position of field `i`, if present; `size` bytes must fit.
    fn scalar(&self, r: &Reader, i: u16, size: usize) -> Result<Option<usize>> {
        let vo = slot(i) as usize;
        if vo + 2 > self.vt_len {
            return Ok(None);
        }
        let o = r.u16(self.vt + vo)? as usize;
        if o == 0 {
            return Ok(None);
        }
        r.slice(self.pos + o, size)?;
        Ok(Some(self.pos + o))
    }
    fn table_field(&self, r: &Reader, i: u16) -> Result<Option<Table>> {
        match self.scalar(r, i, 4)? {
            Some(p) => Ok(Some(r.table(r.indirect(p)?)?)),
            None => Ok(None),
        }
    }
    /// (position of the first element, length) of vector field `i`.
    fn vector(&self, r: &Reader, i: u16) -> Result<Option<(usize, usize)>> {
        match self.scalar(r, i, 4)? {
            Some(p) => {
                let v = r.indirect(p)?;
                let n = r.u32(v)? as usize;
                Ok(Some((v + 4, n)))
            }
            None => Ok(None),
        }
    }
    fn string(&self, r: &Reader, i: u16) -> Result<Option<String>> {
        match self.vector(r, i)? {
            Some((p, n)) => Ok(Some(
                String::from_utf8(r.slice(p, n)?.to_vec()).context("string is not UTF-8")?,
            )),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = Checkpoint {
            trainable: vec![
                CkptTensor {
                    name: "0.weight".into(),
                    dims: vec![2, 3],
                    data: vec![1.0, -2.0, 3.5, 0.0, 1e-8, -0.0],
                },
                CkptTensor {
                    name: "1.thetas".into(),
                    dims: vec![9],
                    data: (0..9).map(|i| i as f32 * 0.1).collect(),
                },
            ],
            frozen: vec![],
            ints: vec![("ditac.seed".into(), 7)],
            floats: vec![("ditac.lambda".into(), 0.25)],
            strings: vec![("ditac.loss".into(), "mse".into())],
        };
        let b = c.to_bytes();
        assert_eq!(&b[4..8], b"ODTC");
        assert_eq!(Checkpoint::from_bytes(&b).unwrap(), c);
        // Truncation and a wrong identifier are errors, not panics.
        for n in [0, 7, 20, b.len() / 2, b.len() - 3] {
            let _ = Checkpoint::from_bytes(&b[..n]);
        }
        let mut bad = b.clone();
        bad[4] = b'X';
        assert!(Checkpoint::from_bytes(&bad).is_err());
    }
}
