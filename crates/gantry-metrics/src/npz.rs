//! NumPy `.npz` reading and writing for statistics and cached features.
//!
//! tch has `Tensor::read_npz`, but it unwraps on a corrupt archive entry and rejects
//! Fortran-ordered arrays, both of which arrive from users (`np.savez` writes a transposed
//! array in Fortran order). This module reads stored and deflated archives
//! (`np.savez_compressed`, as pytorch-fid writes) of little-endian floats and integers in
//! either order, and writes uncompressed archives atomically (temporary file, then rename),
//! streaming large tensors in row blocks rather than copying them whole.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::error::MetricsError;
use crate::torch_file::tensor_from_bytes;

struct Header {
    kind: Kind,
    fortran: bool,
    shape: Vec<i64>,
}

fn descr_kind(d: &str) -> Option<Kind> {
    let d = d.trim_start_matches(['<', '=', '|']);
    Some(match d {
        "f8" => Kind::Double,
        "f4" => Kind::Float,
        "f2" => Kind::Half,
        "i8" => Kind::Int64,
        "i4" => Kind::Int,
        "i2" => Kind::Int16,
        "i1" => Kind::Int8,
        "u1" => Kind::Uint8,
        "b1" => Kind::Bool,
        _ => return None,
    })
}

fn kind_descr(k: Kind) -> Option<&'static str> {
    Some(match k {
        Kind::Double => "<f8",
        Kind::Float => "<f4",
        Kind::Half => "<f2",
        Kind::Int64 => "<i8",
        Kind::Int => "<i4",
        Kind::Int16 => "<i2",
        Kind::Int8 => "|i1",
        Kind::Uint8 => "|u1",
        Kind::Bool => "|b1",
        _ => return None,
    })
}

/// Parses `{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_header(h: &str) -> Result<Header, String> {
    let field = |name: &str| -> Result<&str, String> {
        let key = format!("'{name}':");
        let at = h
            .find(&key)
            .ok_or_else(|| format!("npy header has no {name}: {h:?}"))?;
        Ok(h[at + key.len()..].trim_start())
    };
    let d = field("descr")?;
    let descr = d
        .strip_prefix('\'')
        .and_then(|r| r.split('\'').next())
        .ok_or_else(|| format!("bad descr in npy header {h:?}"))?;
    if descr.starts_with('>') && !descr.ends_with("1") {
        return Err(format!("big-endian npy dtype {descr} is not supported"));
    }
    let kind = descr_kind(descr).ok_or_else(|| format!("unsupported npy dtype {descr}"))?;
    let f = field("fortran_order")?;
    let fortran = if f.starts_with("True") {
        true
    } else if f.starts_with("False") {
        false
    } else {
        return Err(format!("bad fortran_order in npy header {h:?}"));
    };
    let s = field("shape")?;
    let inner = s
        .strip_prefix('(')
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| format!("bad shape in npy header {h:?}"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse::<i64>()
                .ok()
                .filter(|&d| d >= 0)
                .ok_or_else(|| format!("bad dimension {x:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Header {
        kind,
        fortran,
        shape,
    })
}

/// Parses one `.npy` payload into a C-ordered CPU tensor.
pub fn parse_npy(b: &[u8]) -> Result<Tensor, String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not an npy array (magic string missing)".into());
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10usize),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(format!("unsupported or truncated npy version {v}")),
    };
    let body_at = start
        .checked_add(hlen)
        .filter(|&e| e <= b.len())
        .ok_or("truncated npy header")?;
    let h = parse_header(&String::from_utf8_lossy(&b[start..body_at]))?;
    if h.fortran && h.shape.len() > 1 {
        // Column-major data is the C-order array of the reversed shape, transposed back.
        let rev: Vec<i64> = h.shape.iter().rev().copied().collect();
        let dims: Vec<i64> = (0..h.shape.len() as i64).rev().collect();
        let t = tensor_from_bytes(&b[body_at..], &rev, h.kind)?;
        return t
            .f_permute(&dims)
            .and_then(|t| t.f_contiguous())
            .map_err(|e| e.to_string());
    }
    tensor_from_bytes(&b[body_at..], &h.shape, h.kind)
}

/// Reads every array of an `.npz` archive, in archive order.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>, MetricsError> {
    let file = std::fs::File::open(path).map_err(|e| MetricsError::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| MetricsError::format(path, format!("not an npz archive: {e}")))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|e| MetricsError::format(path, format!("npz entry {i}: {e}")))?;
        let name = f.name().to_string();
        let mut buf = Vec::with_capacity(f.size().min(1 << 32) as usize);
        f.read_to_end(&mut buf)
            .map_err(|e| MetricsError::format(path, format!("{name}: {e}")))?;
        let arr =
            parse_npy(&buf).map_err(|e| MetricsError::format(path, format!("{name}: {e}")))?;
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        out.push((key, arr));
    }
    Ok(out)
}

/// The `.npy` header for a C-ordered array.
fn npy_header(kind: Kind, shape: &[i64]) -> Result<Vec<u8>, String> {
    let descr = kind_descr(kind).ok_or_else(|| format!("cannot store {kind:?} in npy"))?;
    let dims = match shape.len() {
        0 => String::new(),
        1 => format!("{},", shape[0]),
        _ => shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    // NumPy pads magic (6) + version (2) + length (2) + header + '\n' to a multiple of 64.
    let total = 10 + h.len() + 1;
    h.push_str(&" ".repeat((64 - total % 64) % 64));
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    Ok(out)
}

/// Writes one tensor as `.npy` (its own dtype, C order), in blocks of rows.
fn write_npy(w: &mut dyn Write, t: &Tensor) -> Result<(), String> {
    let t = t
        .f_to_device(tch::Device::Cpu)
        .and_then(|t| t.f_contiguous())
        .map_err(|e| e.to_string())?;
    let kind = t.kind();
    let shape = t.size();
    w.write_all(&npy_header(kind, &shape)?)
        .map_err(|e| e.to_string())?;
    let flat = t.f_flatten(0, -1).map_err(|e| e.to_string())?;
    let numel = flat.numel() as i64;
    const BLOCK: i64 = 1 << 20;
    let mut buf = Vec::new();
    let mut at = 0;
    while at < numel {
        let len = BLOCK.min(numel - at);
        let part = flat.f_narrow(0, at, len).map_err(|e| e.to_string())?;
        buf.resize(len as usize * kind.elt_size_in_bytes(), 0);
        part.f_copy_data_u8(&mut buf, len as usize)
            .map_err(|e| e.to_string())?;
        w.write_all(&buf).map_err(|e| e.to_string())?;
        at += len;
    }
    Ok(())
}

/// Writes tensors (CPU or not; any dtype NumPy has) to an uncompressed `.npz`, atomically: a
/// sibling temporary file is renamed over `path`, so readers never see half an archive.
pub fn write_npz(path: &Path, arrays: &[(&str, &Tensor)]) -> Result<(), MetricsError> {
    let tmp = tmp_sibling(path);
    let result = (|| -> Result<(), String> {
        let file = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
        let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
        let opts = zip::write::FileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(true);
        for (name, t) in arrays {
            zip.start_file(format!("{name}.npy"), opts)
                .map_err(|e| e.to_string())?;
            write_npy(&mut zip, t)?;
        }
        let mut w = zip.finish().map_err(|e| e.to_string())?;
        w.flush().map_err(|e| e.to_string())?;
        let file = w.into_inner().map_err(|e| e.to_string())?;
        file.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| e.to_string())
    })();
    result.map_err(|reason| {
        let _ = std::fs::remove_file(&tmp);
        MetricsError::format(path, format!("cannot write npz: {reason}"))
    })
}

/// `dir/.name.<pid>.<n>.tmp`: same directory (so rename is atomic), unique per process and call.
pub(crate) fn tmp_sibling(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(t: &Tensor) -> Vec<u8> {
        let mut b = Vec::new();
        write_npy(&mut b, t).unwrap();
        b
    }

    #[test]
    fn header_alignment_and_round_trip() {
        for t in [
            Tensor::arange(6, (Kind::Double, tch::Device::Cpu)).view([2, 3]) * 0.5,
            Tensor::from(7i64),
            Tensor::from_slice(&[1.5f32, -2.0, 3.0, 4.0]),
        ] {
            let b = npy(&t);
            let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
            assert_eq!((10 + hlen) % 64, 0);
            let back = parse_npy(&b).unwrap();
            assert_eq!(back.size(), t.size());
            assert_eq!(back.kind(), t.kind());
            assert!(back.equal(&t));
        }
    }

    #[test]
    fn fortran_order_is_transposed_to_c_order() {
        // [[0, 1, 2], [3, 4, 5]] stored column-major is 0 3 1 4 2 5.
        let data = Tensor::from_slice(&[0.0f64, 3., 1., 4., 2., 5.]);
        let mut b = npy_header(Kind::Double, &[2, 3]).unwrap();
        let (from, to) = (&b"False, 'shape'"[..], &b"True , 'shape'"[..]);
        let at = b.windows(from.len()).position(|w| w == from).unwrap();
        b[at..at + to.len()].copy_from_slice(to);
        let body = npy(&data);
        b.extend_from_slice(&body[body.len() - 48..]);
        let back = parse_npy(&b).unwrap();
        let want = Tensor::arange(6, (Kind::Double, tch::Device::Cpu)).view([2, 3]);
        assert!(back.equal(&want), "{back}");
    }

    #[test]
    fn bad_payloads_are_errors() {
        let b = npy(&Tensor::from_slice(&[1.0f64, 2.0, 3.0]));
        assert!(parse_npy(&b[..b.len() - 1])
            .unwrap_err()
            .contains("needs 24 bytes"));
        assert!(parse_npy(&b[..12]).is_err());
        assert!(parse_npy(b"garbage!!!!!").is_err());
        let mut c = b.clone();
        let at = c.windows(3).position(|w| w == b"<f8").unwrap();
        c[at + 1] = b'c';
        assert!(parse_npy(&c).unwrap_err().contains("unsupported npy dtype"));
    }
}
