//! A minimal protobuf encoder for the ONNX messages the export writes (`onnx.proto`, IR
//! version 8): varints, length-delimited fields, packed repeated int64, fixed32 floats.
//! Field numbers are those of `onnx/onnx.proto`; the messages are checked by loading the
//! result in an independent runtime (tract) in the tests.

/// One message being encoded.
#[derive(Clone, Debug, Default)]
pub struct Msg(pub Vec<u8>);

/// Wire types.
const VARINT: u64 = 0;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// Append `v` as a base-128 varint.
pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Msg {
    fn key(&mut self, field: u32, wire: u64) {
        varint(&mut self.0, (u64::from(field) << 3) | wire);
    }
    /// An int64 / enum field (negative values take ten bytes, as protobuf specifies).
    pub fn int(mut self, field: u32, v: i64) -> Self {
        self.key(field, VARINT);
        varint(&mut self.0, v as u64);
        self
    }
    /// A float field.
    pub fn float(mut self, field: u32, v: f32) -> Self {
        self.key(field, FIXED32);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A bytes field.
    pub fn bytes(mut self, field: u32, b: &[u8]) -> Self {
        self.key(field, LEN);
        varint(&mut self.0, b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    /// A string field.
    pub fn str(self, field: u32, s: &str) -> Self {
        self.bytes(field, s.as_bytes())
    }
    /// An embedded message.
    pub fn msg(self, field: u32, m: &Msg) -> Self {
        self.bytes(field, &m.0)
    }
    /// A packed repeated int64 field.
    pub fn packed(self, field: u32, v: &[i64]) -> Self {
        let mut body = vec![];
        for &x in v {
            varint(&mut body, x as u64);
        }
        self.bytes(field, &body)
    }
}

/// `TensorProto.DataType` values used here.
pub mod dtype {
    pub const FLOAT: i64 = 1;
    pub const INT64: i64 = 7;
}

/// A `TensorProto` with raw little-endian data.
pub fn tensor(name: &str, dims: &[usize], data_type: i64, raw: &[u8]) -> Msg {
    let d: Vec<i64> = dims.iter().map(|&x| x as i64).collect();
    Msg::default()
        .packed(1, &d)
        .int(2, data_type)
        .str(8, name)
        .bytes(9, raw)
}

/// A graph input/output dimension: fixed size or named (dynamic).
#[derive(Clone, Debug)]
pub enum Dim {
    Fixed(usize),
    Named(&'static str),
}

/// A `ValueInfoProto` of a tensor with element type `elem` and shape `dims`.
pub fn value_info(name: &str, elem: i64, dims: &[Dim]) -> Msg {
    let mut shape = Msg::default();
    for d in dims {
        let dim = match d {
            Dim::Fixed(n) => Msg::default().int(1, *n as i64),
            Dim::Named(p) => Msg::default().str(2, p),
        };
        shape = shape.msg(1, &dim);
    }
    let tensor_type = Msg::default().int(1, elem).msg(2, &shape);
    let ty = Msg::default().msg(1, &tensor_type);
    Msg::default().str(1, name).msg(2, &ty)
}

/// `AttributeProto` constructors (`type` field 20: FLOAT 1, INT 2, INTS 7).
pub mod attr {
    use super::Msg;
    pub fn int(name: &str, v: i64) -> Msg {
        Msg::default().str(1, name).int(3, v).int(20, 2)
    }
    pub fn float(name: &str, v: f32) -> Msg {
        Msg::default().str(1, name).float(2, v).int(20, 1)
    }
    pub fn ints(name: &str, v: &[i64]) -> Msg {
        let mut m = Msg::default().str(1, name);
        for &x in v {
            m = m.int(8, x);
        }
        m.int(20, 7)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut b = vec![];
        varint(&mut b, v);
        b
    }

    #[test]
    fn varints_match_the_protobuf_encoding() {
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        // -1 as int64: ten bytes.
        assert_eq!(
            enc(-1i64 as u64),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    #[test]
    fn fields_carry_number_and_wire_type() {
        // field 1 varint 150: 08 96 01 (the protobuf documentation's example).
        assert_eq!(Msg::default().int(1, 150).0, [0x08, 0x96, 0x01]);
        // field 2 string "testing": 12 07 74 65 73 74 69 6e 67.
        assert_eq!(
            Msg::default().str(2, "testing").0,
            [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']
        );
        // field 20 (attribute type) needs a two-byte key: (20 << 3) | 0 = 160 = a0 01.
        assert_eq!(Msg::default().int(20, 2).0, [0xa0, 0x01, 0x02]);
        // packed int64 [3, 270]: 0a 03 03 8e 02; float 1.0 in field 2: 15 00 00 80 3f.
        assert_eq!(
            Msg::default().packed(1, &[3, 270]).0,
            [0x0a, 0x03, 0x03, 0x8e, 0x02]
        );
        assert_eq!(Msg::default().float(2, 1.0).0, [0x15, 0, 0, 0x80, 0x3f]);
    }
}
