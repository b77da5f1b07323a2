//! Reading zip archives of images in place: the central directory is parsed once, with limits
//! that keep a hostile archive bounded, and each entry is read on demand with positioned reads
//! (`pread`), so the loader's worker threads share one open file and nothing is unpacked to disk.
//!
//! What is refused, each with one error that names the archive and the entry:
//! - more than [`MAX_ENTRIES`] entries (checked from the end record, before anything is parsed);
//! - an entry that declares more than [`MAX_ENTRY_BYTES`] bytes, or inflates past what it declares;
//! - more than [`MAX_EXPANSION`] times the archive's size declared in all (plus
//!   [`EXPANSION_SLACK`]): a zip bomb of overlapping entries;
//! - names with a `..` component, absolute names (`/x`, `C:\x`), names with a NUL byte;
//! - symbolic links (a Unix mode of `S_IFLNK` in the entry's attributes);
//! - encrypted entries and compression methods other than stored and deflate (when read).
//!
//! Only the subset of the format that zip writers use for data sets is read: one disk, an
//! optional prefix (self-extractors, non-zip64 only), zip64 sizes and offsets.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use flate2::read::DeflateDecoder;

use crate::DataError;

/// Most entries read from one archive (directory entries and other files included).
pub const MAX_ENTRIES: usize = 5_000_000;
/// Largest entry, compressed or not (a 4096x4096 RGB image as an uncompressed PNG is 48 MiB).
pub const MAX_ENTRY_BYTES: u64 = 256 << 20;
/// Most bytes all entries may declare in total, as a multiple of the archive's size...
pub const MAX_EXPANSION: u64 = 100;
/// ... plus this many bytes, so that small archives of very compressible images still open.
pub const EXPANSION_SLACK: u64 = 1 << 30;

const LOCAL_SIG: [u8; 4] = *b"PK\x03\x04";
const CENTRAL_SIG: [u8; 4] = *b"PK\x01\x02";
const END_SIG: [u8; 4] = *b"PK\x05\x06";
const ZIP64_END_SIG: [u8; 4] = *b"PK\x06\x06";
const ZIP64_LOCATOR_SIG: [u8; 4] = *b"PK\x06\x07";
const END_LEN: usize = 22;

/// The limits an archive is opened with (the constants above; tests shrink them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub entries: usize,
    pub entry_bytes: u64,
    pub expansion: u64,
    pub slack: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            entries: MAX_ENTRIES,
            entry_bytes: MAX_ENTRY_BYTES,
            expansion: MAX_EXPANSION,
            slack: EXPANSION_SLACK,
        }
    }
}

/// One file of the archive, as its central directory describes it.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// `/`-separated (a `\` written by Windows tools is turned into `/`), checked to stay inside.
    pub name: String,
    /// Where its local header starts (prefix included).
    offset: u64,
    compressed: u64,
    /// Uncompressed size, as declared.
    pub size: u64,
    crc: u32,
    method: u16,
    flags: u16,
}

/// An open zip archive whose entries can be read from several threads at once.
pub(crate) struct Archive {
    path: PathBuf,
    file: File,
    len: u64,
    entries: Vec<Entry>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Archive {
    /// Opens `path` and checks every entry of its central directory against `limits`.
    pub fn open(path: &Path, limits: Limits) -> Result<Archive, DataError> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
        let bad = |msg: &str| DataError::format(path, format!("not a readable zip archive: {msg}"));
        if len < END_LEN as u64 {
            return Err(bad("too short for a zip archive"));
        }

        // The end record sits in the last 22 + 65535 (comment) bytes; the last signature wins.
        let tail_len = len.min((END_LEN + 0xFFFF) as u64);
        let tail_at = len - tail_len;
        let mut tail = vec![0u8; tail_len as usize];
        read_at(&file, &mut tail, tail_at).map_err(|e| DataError::io(path, e))?;
        let pos = (0..=tail.len() - END_LEN)
            .rev()
            .find(|&i| tail[i..i + 4] == END_SIG)
            .ok_or_else(|| bad("no end-of-central-directory record"))?;
        let end = &tail[pos..pos + END_LEN];
        let end_at = tail_at + pos as u64;
        let mut count = u64::from(u16_at(end, 10));
        let mut cd_size = u64::from(u32_at(end, 12));
        let mut cd_offset = u64::from(u32_at(end, 16));
        let mut prefix = 0u64;

        let mut locator = [0u8; 20];
        let zip64 = end_at >= 20
            && read_at(&file, &mut locator, end_at - 20).is_ok()
            && locator[..4] == ZIP64_LOCATOR_SIG;
        if zip64 {
            // The zip64 end record must be exactly where the locator says (no prefix allowed):
            // searching for it would let a crafted archive cost one read per byte.
            let rec_at = u64_at(&locator, 8);
            let mut rec = [0u8; 56];
            if rec_at.checked_add(56).is_none_or(|e| e > end_at - 20)
                || read_at(&file, &mut rec, rec_at).is_err()
                || rec[..4] != ZIP64_END_SIG
            {
                return Err(bad("the zip64 end record is not where its locator points"));
            }
            count = u64_at(&rec, 32);
            cd_size = u64_at(&rec, 40);
            cd_offset = u64_at(&rec, 48);
            if cd_offset.checked_add(cd_size).is_none_or(|e| e > rec_at) {
                return Err(bad("the central directory overlaps its end record"));
            }
        } else {
            if u16_at(end, 4) != 0 || u16_at(end, 6) != 0 {
                return Err(bad("multi-disk archives are not supported"));
            }
            // Bytes prepended to the archive (a self-extractor) shift every offset alike.
            let cd_end = cd_offset
                .checked_add(cd_size)
                .filter(|&e| e <= end_at)
                .ok_or_else(|| bad("the central directory runs past its end record"))?;
            prefix = end_at - cd_end;
        }
        if count > limits.entries as u64 {
            return Err(DataError::format(
                path,
                format!(
                    "has {count} entries, more than the {} gantry reads from one archive",
                    limits.entries
                ),
            ));
        }
        // Every central header takes at least 46 bytes.
        if count.saturating_mul(46) > cd_size {
            return Err(bad(&format!(
                "its central directory ({cd_size} bytes) is too small for {count} entries"
            )));
        }

        let mut reader = &file;
        reader
            .seek(SeekFrom::Start(cd_offset + prefix))
            .map_err(|e| DataError::io(path, e))?;
        let mut cd = BufReader::with_capacity(1 << 16, reader.take(cd_size));
        let mut entries = Vec::with_capacity(count as usize);
        let mut total = 0u64;
        for i in 0..count {
            let entry = read_central(&mut cd, prefix).map_err(|e| match e {
                CentralError::Io(e) => bad(&format!("central directory entry {i}: {e}")),
                CentralError::Bad(msg) => bad(&format!("central directory entry {i}: {msg}")),
                CentralError::Entry(name, msg) => DataError::format(
                    path,
                    format!("entry {name:?} {msg}; refusing to read the archive"),
                ),
            })?;
            if entry.size.max(entry.compressed) > limits.entry_bytes {
                return Err(DataError::format(
                    path,
                    format!(
                        "entry {:?} declares {} bytes, more than the {} allowed for one entry",
                        entry.name,
                        entry.size.max(entry.compressed),
                        limits.entry_bytes
                    ),
                ));
            }
            total = total.saturating_add(entry.size);
            entries.push(entry);
        }
        let allowed = len
            .saturating_mul(limits.expansion)
            .saturating_add(limits.slack);
        if total > allowed {
            return Err(DataError::format(
                path,
                format!(
                    "its entries declare {total} bytes in all, more than {}x the archive's {len} \
                     bytes (a zip bomb?)",
                    limits.expansion
                ),
            ));
        }
        Ok(Archive {
            path: path.to_path_buf(),
            file,
            len,
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The path used in messages about `entry`: `<archive>/<entry name>`.
    pub fn entry_path(&self, entry: &Entry) -> PathBuf {
        self.path.join(&entry.name)
    }

    /// The uncompressed bytes of `entry`, checked against its declared size and CRC.
    pub fn read(&self, entry: &Entry) -> Result<Vec<u8>, DataError> {
        let fail = |msg: String| DataError::format(&self.entry_path(entry), msg);
        if entry.flags & 1 != 0 {
            return Err(fail("is encrypted".into()));
        }
        if entry.method != 0 && entry.method != 8 {
            return Err(fail(format!(
                "uses compression method {} (gantry reads stored and deflate entries)",
                entry.method
            )));
        }
        let mut header = [0u8; 30];
        read_at(&self.file, &mut header, entry.offset)
            .map_err(|e| fail(format!("cannot read its local header: {e}")))?;
        if header[..4] != LOCAL_SIG {
            return Err(fail("its local header is missing (corrupt archive)".into()));
        }
        let data_at =
            entry.offset + 30 + u64::from(u16_at(&header, 26)) + u64::from(u16_at(&header, 28));
        if data_at
            .checked_add(entry.compressed)
            .is_none_or(|e| e > self.len)
        {
            return Err(fail("its data runs past the end of the archive".into()));
        }
        let mut raw = vec![0u8; entry.compressed as usize];
        read_at(&self.file, &mut raw, data_at).map_err(|e| DataError::io(&self.path, e))?;
        let data = if entry.method == 0 {
            if entry.compressed != entry.size {
                return Err(fail(format!(
                    "is stored with {} bytes but declares {}",
                    entry.compressed, entry.size
                )));
            }
            raw
        } else {
            let mut out = Vec::with_capacity(entry.size.min(1 << 26) as usize);
            DeflateDecoder::new(&raw[..])
                .take(entry.size + 1)
                .read_to_end(&mut out)
                .map_err(|e| fail(format!("corrupt deflate data: {e}")))?;
            if out.len() as u64 != entry.size {
                return Err(fail(format!(
                    "inflates to {}{} bytes, not the {} it declares",
                    if out.len() as u64 > entry.size {
                        "more than "
                    } else {
                        ""
                    },
                    out.len(),
                    entry.size
                )));
            }
            out
        };
        let mut crc = flate2::Crc::new();
        crc.update(&data);
        if crc.sum() != entry.crc {
            return Err(fail("CRC-32 mismatch (corrupt archive)".into()));
        }
        Ok(data)
    }
}

enum CentralError {
    Io(io::Error),
    Bad(String),
    /// An entry refused for what it is (its name, and why).
    Entry(String, String),
}

impl From<io::Error> for CentralError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            CentralError::Bad("the central directory is cut short".into())
        } else {
            CentralError::Io(e)
        }
    }
}

/// Parses one central directory header (signature included).
fn read_central(r: &mut impl Read, prefix: u64) -> Result<Entry, CentralError> {
    let mut h = [0u8; 46];
    r.read_exact(&mut h)?;
    if h[..4] != CENTRAL_SIG {
        return Err(CentralError::Bad("bad signature".into()));
    }
    let flags = u16_at(&h, 8);
    let method = u16_at(&h, 10);
    let crc = u32_at(&h, 16);
    let mut compressed = u64::from(u32_at(&h, 20));
    let mut size = u64::from(u32_at(&h, 24));
    let name_len = usize::from(u16_at(&h, 28));
    let extra_len = usize::from(u16_at(&h, 30));
    let comment_len = u64::from(u16_at(&h, 32));
    let mode = u32_at(&h, 38) >> 16;
    let mut offset = u64::from(u32_at(&h, 42));
    let mut raw_name = vec![0u8; name_len];
    r.read_exact(&mut raw_name)?;
    let mut extra = vec![0u8; extra_len];
    r.read_exact(&mut extra)?;
    if io::copy(&mut r.take(comment_len), &mut io::sink())? != comment_len {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    let name = decode_name(&raw_name, flags & 0x800 != 0);

    // zip64: the 32-bit fields that overflowed are in extra field 0x0001, in this order.
    let mut wanted: Vec<&mut u64> = [&mut size, &mut compressed, &mut offset]
        .into_iter()
        .filter(|v| **v == 0xFFFF_FFFF)
        .collect();
    if !wanted.is_empty() {
        let mut found = None;
        let mut at = 0;
        while at + 4 <= extra.len() {
            let (id, len) = (u16_at(&extra, at), usize::from(u16_at(&extra, at + 2)));
            let body = extra.get(at + 4..at + 4 + len);
            if id == 1 {
                found = body;
                break;
            }
            at += 4 + len;
        }
        let body = found
            .filter(|b| b.len() >= 8 * wanted.len())
            .ok_or_else(|| {
                CentralError::Entry(
                    name.clone(),
                    "lacks the zip64 sizes its header promises".into(),
                )
            })?;
        for (i, v) in wanted.iter_mut().enumerate() {
            **v = u64_at(body, 8 * i);
        }
    }
    let name = check_name(name)?;
    if mode & 0o170000 == 0o120000 {
        return Err(CentralError::Entry(name, "is a symbolic link".into()));
    }
    Ok(Entry {
        name,
        offset: offset.saturating_add(prefix),
        compressed,
        size,
        crc,
        method,
        flags,
    })
}

/// The name as Python's `zipfile` reads it: UTF-8 when flagged (or when it is valid UTF-8 anyway),
/// else code page 437.
fn decode_name(raw: &[u8], utf8: bool) -> String {
    match std::str::from_utf8(raw) {
        Ok(s) => s.to_string(),
        Err(_) if utf8 => String::from_utf8_lossy(raw).into_owned(),
        Err(_) => raw
            .iter()
            .map(|&b| {
                if b < 0x80 {
                    char::from(b)
                } else {
                    CP437_HIGH.chars().nth(usize::from(b - 0x80)).unwrap_or('?')
                }
            })
            .collect(),
    }
}

const CP437_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}";

/// `name` with `\` as `/`, or why it is refused: it must stay inside the archive.
fn check_name(name: String) -> Result<String, CentralError> {
    let refuse = |why: &str| Err(CentralError::Entry(name.clone(), why.to_string()));
    if name.is_empty() {
        return refuse("has an empty name");
    }
    if name.contains('\0') {
        return refuse("has a NUL byte in its name");
    }
    let clean = name.replace('\\', "/");
    let b = clean.as_bytes();
    if clean.starts_with('/') || (b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic()) {
        return refuse("is an absolute path");
    }
    if clean.split('/').any(|c| c == "..") {
        return refuse("has a '..' component (it points outside the archive)");
    }
    Ok(clean)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::io::{Cursor, Write};
    use zip::write::FileOptions;
    use zip::CompressionMethod;

    /// A zip of `(name, bytes)` written by the `zip` crate (deflated when `deflate`).
    pub(crate) fn zip_of(files: &[(&str, &[u8])], deflate: bool) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let method = if deflate {
            CompressionMethod::Deflated
        } else {
            CompressionMethod::Stored
        };
        for (name, bytes) in files {
            w.start_file(*name, FileOptions::default().compression_method(method))
                .unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn open_bytes(dir: &TempDir, bytes: &[u8], limits: Limits) -> Result<Archive, DataError> {
        let p = dir.write("a.zip", bytes);
        Archive::open(&p, limits)
    }

    fn err(dir: &TempDir, bytes: &[u8], limits: Limits) -> String {
        open_bytes(dir, bytes, limits).err().unwrap().to_string()
    }

    #[test]
    fn reads_stored_and_deflated_entries_and_checks_them() {
        let dir = TempDir::new("archive");
        let body: Vec<u8> = (0..5000u32).map(|i| (i % 7) as u8).collect();
        for deflate in [false, true] {
            let bytes = zip_of(&[("a/x.png", &body), ("b\\y.png", b"yy")], deflate);
            let ar = open_bytes(&dir, &bytes, Limits::default()).unwrap();
            let names: Vec<_> = ar.entries().iter().map(|e| e.name.as_str()).collect();
            assert_eq!(names, ["a/x.png", "b/y.png"]);
            assert_eq!(ar.read(&ar.entries()[0]).unwrap(), body);
            assert_eq!(ar.read(&ar.entries()[1]).unwrap(), b"yy");
            assert!(ar.entry_path(&ar.entries()[1]).ends_with("a.zip/b/y.png"));

            // A flipped byte in the data fails the CRC (stored) or the inflate or CRC (deflate).
            let mut hurt = bytes.clone();
            hurt[30 + "a/x.png".len() + 2] ^= 0x55;
            let ar = open_bytes(&dir, &hurt, Limits::default()).unwrap();
            let e = ar.read(&ar.entries()[0]).unwrap_err().to_string();
            assert!(e.contains("a.zip/a/x.png: "), "{e}");
        }
    }

    #[test]
    fn hostile_names_and_links_are_refused_naming_the_entry() {
        let dir = TempDir::new("archive-names");
        for (name, why) in [
            ("../evil.png", "'..' component"),
            ("a/../../evil.png", "'..' component"),
            ("/etc/evil.png", "absolute path"),
            ("C:\\evil.png", "absolute path"),
            ("a\\..\\..\\evil.png", "'..' component"),
        ] {
            let e = err(
                &dir,
                &zip_of(&[("ok.png", b"x"), (name, b"x")], false),
                Limits::default(),
            );
            assert!(
                e.contains(&format!("entry {name:?} ")) && e.contains(why) && e.contains("a.zip: "),
                "{name}: {e}"
            );
        }
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.add_symlink("link.png", "/etc/passwd", FileOptions::default())
            .unwrap();
        let bytes = w.finish().unwrap().into_inner();
        let e = err(&dir, &bytes, Limits::default());
        assert!(e.contains("entry \"link.png\" is a symbolic link"), "{e}");
    }

    #[test]
    fn bombs_and_counts_are_bounded() {
        let dir = TempDir::new("archive-bomb");
        let zeros = vec![0u8; 1 << 20];
        let bomb = zip_of(&[("a.png", &zeros), ("b.png", &zeros)], true);
        assert!(bomb.len() < 10_000);
        let small = Limits {
            entries: 10,
            entry_bytes: 1 << 21,
            expansion: 100,
            slack: 0,
        };
        let e = err(&dir, &bomb, small);
        assert!(
            e.contains("more than 100x the archive's") && e.contains("zip bomb"),
            "{e}"
        );
        let e = err(
            &dir,
            &bomb,
            Limits {
                entry_bytes: 1000,
                ..Limits::default()
            },
        );
        assert!(
            e.contains("entry \"a.png\" declares 1048576 bytes, more than the 1000"),
            "{e}"
        );
        let many: Vec<(String, Vec<u8>)> = (0..11).map(|i| (format!("{i}.png"), vec![1])).collect();
        let many: Vec<(&str, &[u8])> = many.iter().map(|(n, b)| (n.as_str(), &b[..])).collect();
        let e = err(&dir, &zip_of(&many, false), small);
        assert!(e.contains("has 11 entries, more than the 10"), "{e}");

        // An entry that inflates past its declared size stops at the declared size + 1.
        let mut lying = zip_of(&[("a.png", &zeros)], true);
        let cd = lying.windows(4).rposition(|w| w == CENTRAL_SIG).unwrap();
        lying[cd + 24..cd + 28].copy_from_slice(&1000u32.to_le_bytes());
        let ar = open_bytes(&dir, &lying, Limits::default()).unwrap();
        let e = ar.read(&ar.entries()[0]).unwrap_err().to_string();
        assert!(
            e.contains("inflates to more than 1001 bytes, not the 1000 it declares"),
            "{e}"
        );
    }

    #[test]
    fn broken_archives_are_one_line_errors() {
        let dir = TempDir::new("archive-broken");
        let e = err(&dir, b"PK", Limits::default());
        assert!(e.contains("too short"), "{e}");
        let e = err(&dir, &[7u8; 300], Limits::default());
        assert!(e.contains("no end-of-central-directory record"), "{e}");
        let good = zip_of(&[("a.png", b"abc")], false);
        let mut cut = good.clone();
        let end = cut.windows(4).rposition(|w| w == END_SIG).unwrap();
        cut.drain(end - 10..end);
        let e = err(&dir, &cut, Limits::default());
        assert!(e.contains("not a readable zip archive"), "{e}");
        // Bytes in front (a self-extractor) shift every offset alike and are allowed.
        let mut prefixed = b"#!/bin/sh\nexit 0\n".to_vec();
        prefixed.extend_from_slice(&good);
        let ar = open_bytes(&dir, &prefixed, Limits::default()).unwrap();
        assert_eq!(ar.read(&ar.entries()[0]).unwrap(), b"abc");
    }

    #[test]
    fn cp437_names_decode_as_python_does() {
        assert_eq!(decode_name(b"caf\x82.png", false), "café.png");
        assert_eq!(decode_name("café.png".as_bytes(), true), "café.png");
        assert_eq!(CP437_HIGH.chars().count(), 128);
    }
}
