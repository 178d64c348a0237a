//! NumPy `.npy` files (format version 1.0, little-endian, C order): what the export writes
//! for the evaluated points so that a Python check needs NumPy only, and the reader the
//! tests use.

use crate::error::{Error, Result};
use std::path::Path;

/// An element type of an `.npy` array.
pub trait NpyElem: Copy {
    /// NumPy `descr`, e.g. `<f4`.
    const DESCR: &'static str;
    fn put(self, out: &mut Vec<u8>);
    fn get(b: &[u8]) -> Self;
    const SIZE: usize;
}

impl NpyElem for f32 {
    const DESCR: &'static str = "<f4";
    const SIZE: usize = 4;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        f32::from_le_bytes(b.try_into().expect("4 bytes"))
    }
}

impl NpyElem for i64 {
    const DESCR: &'static str = "<i8";
    const SIZE: usize = 8;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        i64::from_le_bytes(b.try_into().expect("8 bytes"))
    }
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// The bytes of an `.npy` file holding `data` with `shape` (row-major).
pub fn encode<T: NpyElem>(shape: &[usize], data: &[T]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "shape fits data"
    );
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_txt}, }}",
        T::DESCR
    );
    // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * T::SIZE);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for &v in data {
        v.put(&mut out);
    }
    out
}

/// Read an `.npy` file written by [`encode`]: its shape and data. Errors name the file.
pub fn read<T: NpyElem>(path: &Path) -> Result<(Vec<usize>, Vec<T>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: &str| Error::Results {
        path: path.to_path_buf(),
        msg: format!("not an .npy file of {}: {m}", T::DESCR),
    };
    if bytes.len() < 10 || &bytes[..6] != MAGIC || bytes[6] != 1 {
        return Err(bad("no NumPy 1.0 header"));
    }
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(bytes.get(10..10 + hlen).ok_or_else(|| bad("short"))?)
        .map_err(|_| bad("header is not text"))?;
    if !header.contains(&format!("'descr': '{}'", T::DESCR)) {
        return Err(bad("another element type"));
    }
    let inner = header
        .split("'shape': (")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_>>()?;
    let body = &bytes[10 + hlen..];
    let n: usize = shape.iter().product();
    if body.len() != n * T::SIZE {
        return Err(bad("data length does not fit the shape (truncated?)"));
    }
    Ok((shape, body.chunks_exact(T::SIZE).map(T::get).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_follows_the_npy_format() {
        let b = encode::<i64>(&[3], &[1, -2, 3]);
        // Magic, version 1.0, header length, then a dict padded to a 64-byte boundary.
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let h = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
        assert!(
            h.starts_with("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }"),
            "{h}"
        );
        assert!(h.ends_with('\n'));
        assert_eq!(&b[10 + hlen..10 + hlen + 8], &1i64.to_le_bytes());
        assert_eq!(&b[10 + hlen + 8..10 + hlen + 16], &(-2i64).to_le_bytes());
    }

    #[test]
    fn arrays_read_back_and_truncation_is_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.npy");
        let v: Vec<f32> = (0..24).map(|i| i as f32 * 0.25).collect();
        std::fs::write(&p, encode(&[2, 3, 4], &v)).unwrap();
        let (s, r) = read::<f32>(&p).unwrap();
        assert_eq!((s, r), (vec![2, 3, 4], v.clone()));
        let b = encode(&[2, 3, 4], &v);
        std::fs::write(&p, &b[..b.len() - 3]).unwrap();
        let e = read::<f32>(&p).unwrap_err().to_string();
        assert!(e.contains("x.npy") && e.contains("truncated"), "{e}");
    }
}
