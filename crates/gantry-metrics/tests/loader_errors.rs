//! How FidInception::load fails on files that are not the FID weights. No Python needed: the
//! files are built from the network's own key list.

use std::path::Path;

use gantry_metrics::{FidInception, MetricsError, FID_WEIGHTS_FILE};
use tch::{Device, Kind, Tensor};

mod common;
use common::TempDir;

/// A complete state dict (zeros) with optional edits, written as safetensors.
fn write_weights(path: &Path, edit: impl Fn(&str, Vec<i64>) -> Option<Vec<i64>>) {
    let tensors: Vec<(String, Tensor)> = FidInception::parameter_shapes()
        .into_iter()
        .filter_map(|(k, s)| {
            edit(&k, s).map(|s| (k, Tensor::zeros(&s, (Kind::Float, Device::Cpu))))
        })
        .collect();
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    Tensor::write_safetensors(&named, path).unwrap();
}

#[test]
fn missing_and_non_weight_files_name_the_expected_file() {
    let dir = TempDir::new("loader");
    let missing = dir.join("pt_inception.pth");
    let e = FidInception::load(&missing, Device::Cpu).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with(&missing.display().to_string()), "{msg}");
    assert!(
        msg.contains(FID_WEIGHTS_FILE) && msg.contains("95,628,359"),
        "{msg}"
    );

    for (name, bytes) in [
        ("html.pth", &b"<html>404 Not Found</html>"[..]),
        ("empty.pth", &b""[..]),
        ("pickle.pth", &[0x80, 0x02, b'K', 1, b'.'][..]),
        ("zip.pth", &b"PK\x03\x04 not really a zip"[..]),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = FidInception::load(&p, Device::Cpu).unwrap_err();
        assert!(matches!(e, MetricsError::Weights { .. }), "{name}: {e:?}");
        assert!(e.to_string().contains(FID_WEIGHTS_FILE), "{name}: {e}");
    }
}

#[test]
fn wrong_shape_and_missing_key_are_named() {
    let dir = TempDir::new("keys");
    let p = dir.join("w.safetensors");

    write_weights(&p, |k, s| {
        Some(if k == "fc.weight" { vec![10, 2048] } else { s })
    });
    let e = FidInception::load(&p, Device::Cpu).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: fc.weight is [10, 2048], FID Inception wants [1008, 2048]",
            p.display()
        )
    );

    let gone = "Mixed_6c.branch7x7dbl_3.bn.running_var";
    write_weights(&p, |k, s| (k != gone).then_some(s));
    let e = FidInception::load(&p, Device::Cpu).unwrap_err();
    assert!(
        matches!(&e, MetricsError::MissingKey { key, .. } if key == gone),
        "{e:?}"
    );
    assert!(e.to_string().contains(gone) && e.to_string().contains(FID_WEIGHTS_FILE));

    // Complete (and without num_batches_tracked, which is ignored): loads.
    write_weights(&p, |_, s| Some(s));
    let net = FidInception::load(&p, Device::Cpu).unwrap();
    let x = Tensor::zeros([1, 3, 299, 299], (Kind::Float, Device::Cpu));
    let (pool, logits) = net.forward(&x).unwrap();
    assert_eq!((pool.size(), logits.size()), (vec![1, 2048], vec![1, 1008]));
    let e = net.forward(&Tensor::zeros([1, 3, 64, 64], (Kind::Float, Device::Cpu)));
    assert!(e.unwrap_err().to_string().contains("[1, 3, 64, 64]"));
}

/// issue 19: a small zip whose data.pkl inflates to 100 MiB (a zip bomb) is refused with one
/// line once the entry passes 64 MiB + 16x the archive, without inflating the rest.
#[test]
fn issue_19_a_zip_bomb_is_refused_by_size() {
    use std::io::Write;
    let dir = TempDir::new("zip-bomb");
    let path = dir.join("bomb.pth");
    let file = std::fs::File::create(&path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("archive/data.pkl", opts).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..100 {
        zip.write_all(&zeros).unwrap();
    }
    zip.finish().unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 1 << 20, "{size}");
    let e = FidInception::load(&path, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inflates past") && e.contains("zip bomb"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}
