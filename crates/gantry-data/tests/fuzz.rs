//! Fuzzing the readers of outside bytes in gantry-data: IDX files, CIFAR binaries, and images
//! decoded through a folder data set. Every input must come back as `Ok` or `Err`, never a panic
//! (proptest reports one as a failure, with the shrunk input).

#[path = "../../../tests/fuzz/mutate.rs"]
mod mutate;

use gantry_data::{parse_idx, parse_records, CifarVariant, DataConfig, DataKind};
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
