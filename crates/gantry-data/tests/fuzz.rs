//! Fuzzing the readers of outside bytes in gantry-data: IDX files, CIFAR binaries, images
//! decoded through a folder data set, zip archives (read as a data set and converted by
//! `dataset_tool`) and stylegan2-ada `dataset.json` files. Every input must come back as `Ok`
//! or `Err`, never a panic (proptest reports one as a failure, with the shrunk input).

#[path = "../../../tests/fuzz/mutate.rs"]
mod mutate;

use gantry_data::dataset_tool::{convert, ConvertOptions, ConvertTransform};
use gantry_data::{
    parse_dataset_json, parse_idx, parse_records, CifarVariant, DataConfig, DataKind,
};
use proptest::prelude::*;
use std::path::Path;

fn idx_seed() -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, 3];
    for d in [2u32, 4, 4] {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend((0..32u8).map(|i| i * 7));
    b
}

fn cifar_seed() -> Vec<u8> {
    let mut b = Vec::new();
    for label in [3u8, 7] {
        b.push(label);
        b.extend((0..3072u32).map(|i| (i % 251) as u8));
    }
    b
}

proptest! {
    #![proptest_config(mutate::config())]

    #[test]
    fn idx_files(bytes in mutate::near(idx_seed())) {
        let _ = parse_idx(Path::new("fuzz.idx"), &bytes);
    }

    #[test]
    fn cifar_binaries(bytes in mutate::near(cifar_seed())) {
        let _ = parse_records(CifarVariant::Cifar10, Path::new("fuzz.bin"), &bytes);
        let _ = parse_records(CifarVariant::Cifar100, Path::new("fuzz.bin"), &bytes);
    }

    #[test]
    fn dataset_json(bytes in mutate::near(JSON_SEED.to_vec())) {
        let _ = parse_dataset_json(&bytes, Path::new("dataset.json"));
    }
}

const JSON_SEED: &[u8] =
    br#"{"labels": [["00000/img00000000.png", 3], ["00000/img00000001.png", 0]]}"#;

fn png_seed(format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(6, 5, |x, y| image::Rgb([x as u8 * 40, y as u8 * 50, 90]));
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

/// A stored zip as dataset_tool.py writes one, with a deflated entry too.
fn zip_seed() -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let deflated = stored.compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes, opts) in [
        (
            "00000/img00000000.png",
            png_seed(image::ImageFormat::Png),
            stored,
        ),
        (
            "00000/img00000001.png",
            png_seed(image::ImageFormat::Jpeg),
            deflated,
        ),
        ("dataset.json", JSON_SEED.to_vec(), stored),
    ] {
        w.start_file(name, opts).unwrap();
        w.write_all(&bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Zip archives go through the zip data set (open, labels, every sample) and the converter.
#[test]
fn zip_archives() {
    let dir = std::env::temp_dir().join(format!("gantry-fuzz-zips-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a.zip");
    // The seed itself reads and converts, so mutations start from the deep paths.
    std::fs::write(&file, zip_seed()).unwrap();
    let seed = gantry_data::open(&DataConfig {
        kind: DataKind::Zip,
        path: Some(file.clone()),
        labels: true,
        ..Default::default()
    })
    .unwrap();
    assert_eq!((seed.len(), seed.num_classes()), (2, Some(4)));
    let mut runner = proptest::test_runner::TestRunner::new(mutate::config());
    runner
        .run(&mutate::near(zip_seed()), |bytes| {
            std::fs::write(&file, &bytes).unwrap();
            for labels in [false, true] {
                let Ok(ds) = gantry_data::open(&DataConfig {
                    kind: DataKind::Zip,
                    path: Some(file.clone()),
                    resolution: 8,
                    labels,
                    ..Default::default()
                }) else {
                    continue;
                };
                let mut out = vec![0f32; 3 * 8 * 8];
                let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
                for i in 0..ds.len().min(8) {
                    let _ = ds.load_into(i, &mut out, &mut rng);
                }
                let _ = ds.take_notes();
            }
            let _ = convert(&ConvertOptions {
                source: file.clone(),
                dest: dir.join("out.zip"),
                resolution: Some(8),
                transform: ConvertTransform::CenterCrop,
                overwrite: true,
                threads: 1,
                ..Default::default()
            });
            Ok(())
        })
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Images go through the folder data set the way training reads them (decode, resize, crop).
#[test]
fn images_in_a_folder() {
    let dir = std::env::temp_dir().join(format!("gantry-fuzz-images-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a.png");
    let mut seeds = Vec::new();
    for format in [image::ImageFormat::Png, image::ImageFormat::Jpeg] {
        let img =
            image::RgbImage::from_fn(6, 5, |x, y| image::Rgb([x as u8 * 40, y as u8 * 50, 90]));
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, format).unwrap();
        seeds.push(bytes.into_inner());
    }
    std::fs::write(&file, &seeds[0]).unwrap();
    let ds = gantry_data::open(&DataConfig {
        kind: DataKind::Folder,
        path: Some(dir.clone()),
        resolution: 8,
        ..Default::default()
    })
    .unwrap();
    let state = std::cell::RefCell::new((
        vec![0f32; 3 * 8 * 8],
        <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0),
    ));
    for seed in seeds {
        let mut runner = proptest::test_runner::TestRunner::new(mutate::config());
        runner
            .run(&mutate::near(seed), |bytes| {
                std::fs::write(&file, &bytes).unwrap();
                let (out, rng) = &mut *state.borrow_mut();
                let _ = ds.load_into(0, out, rng);
                Ok(())
            })
            .unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
