//! Decoding the image files of folders and zip archives, and the notes a data set leaves for
//! its caller (the first image that is not square).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use image::{DynamicImage, ImageReader};

use crate::transform::Transform;
use crate::{DataError, ResizeMode};

/// File extensions read (compared case-insensitively).
pub(crate) const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Whether a file name has one of [`EXTENSIONS`].
pub(crate) fn has_image_extension(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, e)| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Whether a `/`-separated archive name is an image gantry reads: an image extension, and no
/// hidden component (`.x`, macOS `__MACOSX/._x.png` resource forks are not images).
pub(crate) fn is_image_entry(name: &str) -> bool {
    !name.ends_with('/')
        && has_image_extension(name)
        && !name
            .split('/')
            .any(|c| c.starts_with('.') || c == "__MACOSX")
}

/// Whether a JPEG's last scan is followed by the end-of-image marker. Entropy-coded data never
/// holds `FF DA` (start of scan) or `FF D9` (end of image): the encoder stuffs every `FF` there.
pub(crate) fn jpeg_complete(bytes: &[u8]) -> bool {
    let Some(last_scan) = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]) else {
        // No scan at all: the decoder says what is wrong.
        return true;
    };
    bytes[last_scan + 2..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Decodes a PNG or JPEG (format from the bytes), refusing a cut-off JPEG; `path` names it.
pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<DynamicImage, DataError> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    // The JPEG decoder fills a cut-off file with grey without a word (a cut PNG fails).
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_complete(bytes) {
        return Err(DataError::decode(
            path,
            "truncated JPEG (no end-of-image marker after its last scan)",
        ));
    }
    reader.decode().map_err(|e| DataError::decode(path, e))
}

/// Warnings a data set found while loading, each handed out once (see `Dataset::take_notes`).
#[derive(Debug, Default)]
pub(crate) struct Notes {
    pending: Mutex<Vec<String>>,
    non_square: AtomicBool,
}

impl Notes {
    /// Notes the first image that is not square, saying what `t` does with it.
    pub fn check_square(&self, img: &DynamicImage, name: &Path, t: &Transform) {
        let (w, h) = (img.width(), img.height());
        if w == h || self.non_square.swap(true, Ordering::Relaxed) {
            return;
        }
        let r = t.res;
        let what = match t.fit {
            ResizeMode::CenterCrop => "crops the longer side away",
            ResizeMode::Pad => "pads it with black",
            ResizeMode::Stretch => "stretches it",
        };
        self.push(format!(
            "data: {} is {w}x{h}, not square: data.transform={} {what} to {r}x{r} (set \
             data.transform = center-crop, pad or stretch; later non-square images are not reported)",
            name.display(),
            t.fit
        ));
    }

    fn push(&self, note: String) {
        if let Ok(mut p) = self.pending.lock() {
            p.push(note);
        }
    }

    /// The notes not handed out yet.
    pub fn take(&self) -> Vec<String> {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        assert!(is_image_entry("00000/img00000000.png"));
        assert!(is_image_entry("a/B.JPEG"));
        assert!(!is_image_entry("__MACOSX/a/._x.png"));
        assert!(!is_image_entry("a/.hidden.png"));
        assert!(!is_image_entry("dataset.json"));
        assert!(!is_image_entry("dir.png/"));
        assert!(!is_image_entry("png"));
    }

    #[test]
    fn the_first_non_square_image_is_noted_once() {
        let notes = Notes::default();
        let t = Transform {
            res: 8,
            channels: 3,
            hflip: false,
            fit: ResizeMode::Pad,
        };
        notes.check_square(&DynamicImage::new_rgb8(4, 4), Path::new("sq.png"), &t);
        assert!(notes.take().is_empty());
        notes.check_square(&DynamicImage::new_rgb8(6, 4), Path::new("a/wide.png"), &t);
        notes.check_square(&DynamicImage::new_rgb8(4, 6), Path::new("tall.png"), &t);
        let n = notes.take();
        assert_eq!(n.len(), 1);
        assert!(
            n[0].starts_with("data: a/wide.png is 6x4, not square: data.transform=pad pads it"),
            "{n:?}"
        );
        assert!(notes.take().is_empty());
    }
}
