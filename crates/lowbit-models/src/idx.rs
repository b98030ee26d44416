//! The IDX file format of MNIST and Fashion-MNIST, plain or gzip-compressed.
//!
//! An IDX file is a 4-byte magic number `00 00 TT NN` (`TT` the element type, `08` for
//! unsigned bytes; `NN` the number of dimensions), then `NN` big-endian `u32` dimensions, then
//! the elements in row-major order. Only unsigned-byte files (all MNIST-style data) are read.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use flate2::read::GzDecoder;

use crate::error::{ModelError, Result};

/// The element-type byte of unsigned-byte IDX files.
pub const IDX_U8: u8 = 0x08;

/// An unsigned-byte IDX array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions as stored in the file, except the first, which is the number of items
    /// actually read (at most the `limit` given to [`read_idx`]).
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

/// Reads an unsigned-byte IDX file of `ndims` dimensions (gzip-compressed when it starts with
/// the gzip magic bytes), keeping at most `limit` items (entries along the first dimension).
/// Only the items kept are decompressed.
///
/// Errors: [`ModelError::MissingFile`] naming `setup` when the file is not there;
/// [`ModelError::Idx`] naming the file for a wrong magic number, element type or number of
/// dimensions, a truncated file, or trailing bytes after the last item.
pub fn read_idx(path: &Path, ndims: usize, limit: Option<usize>, setup: &str) -> Result<IdxArray> {
    let file = File::open(path).map_err(|e| ModelError::io(path, e, setup))?;
    let mut raw = BufReader::new(file);
    let mut head = [0u8; 2];
    let n = read_full(&mut raw, &mut head, path)?;
    let head = &head[..n];
    let chained = head.chain(raw);
    let mut reader: Box<dyn Read + '_> = if head == [0x1f, 0x8b] {
        Box::new(GzDecoder::new(chained))
    } else {
        Box::new(chained)
    };
    read_body(&mut reader, path, ndims, limit)
}

fn bad(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Idx {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut (impl Read + ?Sized), buf: &mut [u8], path: &Path) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(bad(
                    path,
                    format!(
                        "unreadable after {got} bytes of a read (corrupt or truncated gzip?): {e}"
                    ),
                ));
            }
        }
    }
    Ok(got)
}

fn read_body(
    r: &mut dyn Read,
    path: &Path,
    ndims: usize,
    limit: Option<usize>,
) -> Result<IdxArray> {
    let mut magic = [0u8; 4];
    if read_full(r, &mut magic, path)? < 4 {
        return Err(bad(path, "truncated: shorter than the 4-byte magic number"));
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(bad(
            path,
            format!(
                "bad magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file (expected 0000{IDX_U8:02x}{ndims:02x})",
                magic[0], magic[1], magic[2], magic[3]
            ),
        ));
    }
    if magic[2] != IDX_U8 {
        return Err(bad(
            path,
            format!(
                "element type 0x{:02x}, expected 0x{IDX_U8:02x} (unsigned byte)",
                magic[2]
            ),
        ));
    }
    if usize::from(magic[3]) != ndims {
        return Err(bad(
            path,
            format!("{} dimensions, expected {ndims}", magic[3]),
        ));
    }
    let mut dims = Vec::with_capacity(ndims);
    for i in 0..ndims {
        let mut d = [0u8; 4];
        if read_full(r, &mut d, path)? < 4 {
            return Err(bad(
                path,
                format!("truncated in dimension {i} of the header"),
            ));
        }
        dims.push(u32::from_be_bytes(d) as usize);
    }
    let item: usize = dims[1..]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(path, format!("dimensions {dims:?} overflow")))?;
    let stored = dims.first().copied().unwrap_or(0);
    let keep = limit.map_or(stored, |l| l.min(stored));
    let bytes = keep
        .checked_mul(item)
        .ok_or_else(|| bad(path, format!("dimensions {dims:?} overflow")))?;
    let mut data = vec![0u8; bytes];
    let got = read_full(r, &mut data, path)?;
    if got < bytes {
        return Err(bad(
            path,
            format!(
                "truncated: the header promises {stored} items of {item} bytes, the data ends after {got} of the {bytes} bytes read"
            ),
        ));
    }
    if keep == stored {
        let mut extra = [0u8; 1];
        if read_full(r, &mut extra, path)? != 0 {
            return Err(bad(
                path,
                format!("trailing bytes after the {stored} items the header declares"),
            ));
        }
    }
    if let Some(d) = dims.first_mut() {
        *d = keep;
    }
    Ok(IdxArray { dims, data })
}
