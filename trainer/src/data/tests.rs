//! Unit tests of the in-memory data sets: IDX and CIFAR folders, the
//! validation split, augmentation and batching.

use super::cifar::CIFAR10_FILES;
use super::*;
use std::fs;
use std::io::Write;
use std::path::Path;

fn idx_images(n: usize, h: usize, w: usize, seed: u8) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        v.extend_from_slice(&(d as u32).to_be_bytes());
    }
    v.extend((0..n * h * w).map(|i| (i as u8).wrapping_mul(seed)));
    v
}

fn idx_labels(n: usize) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend_from_slice(&(n as u32).to_be_bytes());
    v.extend((0..n).map(|i| (i % 10) as u8));
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write_idx(dir: &Path, gzip: bool) {
    let files = [
        ("train-images-idx3-ubyte", idx_images(50, 28, 28, 3)),
        ("train-labels-idx1-ubyte", idx_labels(50)),
        ("t10k-images-idx3-ubyte", idx_images(20, 28, 28, 5)),
        ("t10k-labels-idx1-ubyte", idx_labels(20)),
    ];
    for (name, bytes) in files {
        if gzip {
            fs::write(dir.join(format!("{name}.gz")), gz(&bytes)).unwrap();
        } else {
            fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

#[test]
fn idx_folder_gz_and_raw_load_alike() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_idx(a.path(), true);
    write_idx(b.path(), false);
    let da = Dataset::load(a.path().to_str().unwrap(), 0).unwrap();
    let db = Dataset::load(b.path().to_str().unwrap(), 0).unwrap();
    assert_eq!(da.format, Format::Idx);
    assert_eq!((da.train.len(), da.val.len(), da.test.len()), (45, 5, 20));
    assert_eq!(da.num_classes, 10);
    assert_eq!(da.input_shape(), [1, 28, 28]);
    assert_eq!(da.train, db.train);
    assert!(!da.augment);
}

#[test]
fn validation_split_depends_on_split_seed_only() {
    let d = tempfile::tempdir().unwrap();
    write_idx(d.path(), false);
    let p = d.path().to_str().unwrap();
    let (a, b, c) = (
        Dataset::load(p, 1).unwrap(),
        Dataset::load(p, 1).unwrap(),
        Dataset::load(p, 2).unwrap(),
    );
    assert_eq!(a.val, b.val);
    assert_ne!(a.val, c.val);
}

#[test]
fn truncated_idx_file_names_the_file() {
    let d = tempfile::tempdir().unwrap();
    write_idx(d.path(), false);
    let f = d.path().join("t10k-images-idx3-ubyte");
    let bytes = fs::read(&f).unwrap();
    fs::write(&f, &bytes[..bytes.len() - 1]).unwrap();
    let err = Dataset::load(d.path().to_str().unwrap(), 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t10k-images-idx3-ubyte") && err.contains("do not match"),
        "{err}"
    );
}

#[test]
fn missing_folder_and_empty_folder_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let err = Dataset::load(d.path().to_str().unwrap(), 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds no data set"), "{err}");
    let gone = d.path().join("nope");
    let err = Dataset::load(gone.to_str().unwrap(), 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no such folder"), "{err}");
    let err = Dataset::load("imagenet", 0).unwrap_err().to_string();
    assert!(err.contains("unknown data set"), "{err}");
}

/// Writes CIFAR records in the official binary layout.
fn cifar_file(n: usize, hundred: bool, salt: u8) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        if hundred {
            v.push((i % 20) as u8);
            v.push((i % 100) as u8);
        } else {
            v.push((i % 10) as u8);
        }
        v.extend((0..3072).map(|j| (j as u8).wrapping_add(i as u8).wrapping_mul(salt)));
    }
    v
}

#[test]
fn cifar10_folder_in_official_layout() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cifar-10-batches-bin");
    fs::create_dir(&dir).unwrap();
    for (k, name) in CIFAR10_FILES.iter().enumerate() {
        fs::write(dir.join(name), cifar_file(8, false, k as u8 + 1)).unwrap();
    }
    let d = Dataset::load(root.path().to_str().unwrap(), 0).unwrap();
    assert_eq!(d.format, Format::Cifar10);
    assert_eq!((d.train.len() + d.val.len(), d.test.len()), (40, 8));
    assert_eq!(d.num_classes, 10);
    assert_eq!(d.input_shape(), [3, 32, 32]);
    // The first test record is kept byte for byte, label first.
    assert_eq!(d.test.labels[0], 0);
    assert_eq!(&d.test.images[..3072], &cifar_file(1, false, 6)[1..]);
    assert!(d.augment);
}

#[test]
fn cifar100_uses_fine_labels_and_rejects_partial_records() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("train.bin"), cifar_file(30, true, 1)).unwrap();
    fs::write(dir.path().join("test.bin"), cifar_file(10, true, 2)).unwrap();
    let d = Dataset::load(dir.path().to_str().unwrap(), 0).unwrap();
    assert_eq!(d.format, Format::Cifar100);
    assert_eq!(d.test.labels, (0..10).collect::<Vec<i64>>());
    let mut bad = cifar_file(2, true, 1);
    bad.pop();
    fs::write(dir.path().join("test.bin"), bad).unwrap();
    let err = Dataset::load(dir.path().to_str().unwrap(), 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("test.bin") && err.contains("3074-byte"),
        "{err}"
    );
}

#[test]
fn missing_cifar_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("data_batch_1.bin"), cifar_file(2, false, 1)).unwrap();
    let err = Dataset::load(dir.path().to_str().unwrap(), 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing data_batch_2.bin"), "{err}");
}

#[test]
fn crop_flip_matches_padding_semantics() {
    // A 1x2x2 image; with top = left = 4 (no shift) and a flip, columns swap.
    let src = [1u8, 2, 3, 4];
    let mut dst = [0u8; 4];
    let mut found = [false; 2];
    for s in 0..500 {
        let mut rng = Rng::new(s, 0);
        let mut probe = rng.clone();
        let (top, left, flip) = (probe.below(9), probe.below(9), probe.coin());
        CIFAR_CROP.apply(&src, &mut dst, [1, 2, 2], &mut rng);
        if top == 4 && left == 4 {
            let want = if flip { [2, 1, 4, 3] } else { [1, 2, 3, 4] };
            assert_eq!(dst, want);
            found[flip as usize] = true;
        }
        if top == 0 && left == 0 && !flip {
            // Shifted by the full padding: all of the window is padding.
            assert_eq!(dst, [0, 0, 0, 0]);
        }
    }
    assert!(found[0] || found[1]);
}

#[test]
fn rotate_turns_about_the_centre() {
    // 1x3x3 with distinct pixels: 0 degrees is the identity, 90 turns
    // counter-clockwise (the top row becomes the left column, reversed).
    let src = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
    let mut dst = [0u8; 9];
    rotate(&src, &mut dst, [1, 3, 3], 0.0);
    assert_eq!(dst, src);
    rotate(&src, &mut dst, [1, 3, 3], 90.0);
    assert_eq!(dst, [3, 6, 9, 2, 5, 8, 1, 4, 7]);
    // A small turn of a 1x9x9 image loses its corners to the fill.
    let big: Vec<u8> = (1..=81).collect();
    let mut out = vec![0u8; 81];
    rotate(&big, &mut out, [1, 9, 9], 15.0);
    assert_eq!(out[40], 41, "the centre stays");
    assert_ne!(out, big);
    rotate(&big, &mut out, [1, 9, 9], 45.0);
    assert_eq!(out[0], 0, "a corner is filled with zeros");
}

#[test]
fn only_cifar100_training_batches_are_rotated() {
    let (d10, d100) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d10 = d10.path().join("cifar-10-batches-bin");
    fs::create_dir(&d10).unwrap();
    for (k, name) in CIFAR10_FILES.iter().enumerate() {
        fs::write(d10.join(name), cifar_file(10, false, k as u8 + 1)).unwrap();
    }
    fs::write(d100.path().join("train.bin"), cifar_file(50, true, 1)).unwrap();
    fs::write(d100.path().join("test.bin"), cifar_file(10, true, 2)).unwrap();
    let c10 = Dataset::load(d10.parent().unwrap().to_str().unwrap(), 0).unwrap();
    let c100 = Dataset::load(d100.path().to_str().unwrap(), 0).unwrap();
    assert_eq!((c10.rotation, c100.rotation), (0.0, 15.0));
    // A CIFAR-100 training batch is crop, flip, then a rotation drawn
    // from the same generator; replaying the draws by hand reproduces it.
    let mut rng = Rng::new(5, 0);
    let mut order: Vec<usize> = (0..c100.train.len()).collect();
    rng.shuffle(&mut order);
    let (mut crop, mut turned) = (vec![0u8; 3072], vec![0u8; 3072]);
    let mut want = Vec::new();
    for &i in &order[..4] {
        CIFAR_CROP.apply(c100.train.image(i), &mut crop, [3, 32, 32], &mut rng);
        let angle = -15.0 + 30.0 * (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        assert!(angle.abs() <= 15.0);
        rotate(&crop, &mut turned, [3, 32, 32], angle);
        want.extend_from_slice(&turned);
    }
    let labels: Vec<i64> = order[..4].iter().map(|&i| c100.train.labels[i]).collect();
    let want = c100.batch_from_bytes(&want, &labels, Device::Cpu).images;
    let got = c100
        .train_batches(4, 5, 0, Device::Cpu)
        .next()
        .unwrap()
        .images;
    assert_eq!(f64::try_from((got - want).abs().max()).unwrap(), 0.0);
}

#[test]
fn batches_are_normalised_and_cover_the_split() {
    let d = tempfile::tempdir().unwrap();
    write_idx(d.path(), false);
    let data = Dataset::load(d.path().to_str().unwrap(), 0).unwrap();
    let batches: Vec<Batch> = data.eval_batches(Split::Test, 8, Device::Cpu).collect();
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[2].images.size(), [4, 1, 28, 28]);
    let all = Tensor::cat(
        &batches
            .iter()
            .map(|b| b.images.shallow_clone())
            .collect::<Vec<_>>(),
        0,
    );
    let first = f64::try_from(all.get(0).get(0).get(0).get(1)).unwrap();
    let want = (data.test.images[1] as f64 / 255.0 - data.mean[0] as f64) / data.std[0] as f64;
    assert!((first - want).abs() < 1e-5);
    // The training pixels are normalised to mean 0 and deviation 1.
    let train: Vec<Tensor> = data
        .train_batches(16, 0, 0, Device::Cpu)
        .map(|b| b.images)
        .collect();
    let train = Tensor::cat(&train, 0);
    assert!(f64::try_from(train.mean(None)).unwrap().abs() < 1e-4);
    assert_eq!(data.train_batches_per_epoch(16), 3);
    assert_eq!(data.train_batches(16, 0, 0, Device::Cpu).count(), 3);
}

#[test]
fn train_order_depends_on_seed_and_epoch() {
    let d = tempfile::tempdir().unwrap();
    write_idx(d.path(), false);
    let data = Dataset::load(d.path().to_str().unwrap(), 0).unwrap();
    let labels = |seed, epoch| -> Vec<i64> {
        let b: Vec<Tensor> = data
            .train_batches(45, seed, epoch, Device::Cpu)
            .map(|b| b.labels)
            .collect();
        Vec::<i64>::try_from(&b[0]).unwrap()
    };
    assert_eq!(labels(1, 0), labels(1, 0));
    assert_ne!(labels(1, 0), labels(1, 1));
    assert_ne!(labels(1, 0), labels(2, 0));
}

/// The first batch of an epoch as [`Dataset::train_batches`] makes it,
/// replayed by hand: the shuffle, then each image cropped by `crop` (or
/// kept as it is) with draws from the same generator.
fn replay_first_batch(
    data: &Dataset,
    n: usize,
    seed: u64,
    epoch: u64,
    crop: Option<CropFlip>,
) -> Tensor {
    let mut rng = Rng::new(seed, epoch);
    let mut order: Vec<usize> = (0..data.train.len()).collect();
    rng.shuffle(&mut order);
    let mut out = vec![0u8; data.train.image_len()];
    let mut want = Vec::new();
    for &i in &order[..n] {
        match crop {
            Some(c) => {
                c.apply(data.train.image(i), &mut out, data.input_shape(), &mut rng);
                want.extend_from_slice(&out);
            }
            None => want.extend_from_slice(data.train.image(i)),
        }
    }
    let labels: Vec<i64> = order[..n].iter().map(|&i| data.train.labels[i]).collect();
    data.batch_from_bytes(&want, &labels, Device::Cpu).images
}

fn first_batch(data: &Dataset, n: usize, seed: u64, epoch: u64) -> Tensor {
    data.train_batches(n, seed, epoch, Device::Cpu)
        .next()
        .unwrap()
        .images
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && f64::try_from((a - b).abs().max()).unwrap() == 0.0
}

#[test]
fn idx_training_batches_are_unaugmented_by_default() {
    let d = tempfile::tempdir().unwrap();
    write_idx(d.path(), false);
    let spec = d.path().to_str().unwrap();
    let data = Dataset::load(spec, 0).unwrap();
    // Without the setting, and with `none` asked for explicitly, every
    // batch is the shuffled images as they are in the file.
    let settings = crate::config::TrainSettings {
        data: spec.to_string(),
        ..Default::default()
    };
    let mut explicit = settings.load_data().unwrap();
    explicit.set_idx_augment(IdxAugment::None, 5).unwrap();
    for data in [&data, &settings.load_data().unwrap(), &explicit] {
        assert!(!data.augment);
        for (seed, epoch) in [(0, 0), (3, 1)] {
            let want = replay_first_batch(data, 16, seed, epoch, None);
            assert!(same(&first_batch(data, 16, seed, epoch), &want));
        }
    }
}

#[test]
fn idx_crops_and_flips_replay_from_seed_and_epoch() {
    let d = tempfile::tempdir().unwrap();
    write_idx(d.path(), false);
    let spec = d.path().to_str().unwrap();
    let plain = Dataset::load(spec, 0).unwrap();
    for (mode, flip) in [(IdxAugment::Crop, false), (IdxAugment::CropFlip, true)] {
        let settings = crate::config::TrainSettings {
            data: spec.to_string(),
            augment: mode,
            augment_pad: 3,
            ..Default::default()
        };
        let data = settings.load_data().unwrap();
        assert!(data.augment);
        assert_eq!(data.crop, CropFlip { pad: 3, flip });
        let got = first_batch(&data, 16, 7, 2);
        let want = replay_first_batch(&data, 16, 7, 2, Some(data.crop));
        assert!(same(&got, &want), "{mode:?}");
        // Repeatable for one seed and epoch, different for the next epoch
        // and from the unaugmented batch.
        assert!(same(&got, &first_batch(&data, 16, 7, 2)));
        assert!(!same(&got, &first_batch(&data, 16, 7, 3)));
        assert!(!same(&got, &first_batch(&plain, 16, 7, 2)));
        // Evaluation batches are never augmented.
        assert!(same(&data_eval(&data), &data_eval(&plain)));
    }
}

fn data_eval(d: &Dataset) -> Tensor {
    d.eval_batches(Split::Val, 5, Device::Cpu)
        .next()
        .unwrap()
        .images
}

#[test]
fn idx_augment_settings_are_checked() {
    let d = tempfile::tempdir().unwrap();
    write_idx(d.path(), false);
    let mut data = Dataset::load(d.path().to_str().unwrap(), 0).unwrap();
    let err = data
        .set_idx_augment(IdxAugment::Crop, 29)
        .unwrap_err()
        .to_string();
    assert!(err.contains("29 pixels") && err.contains("28x28"), "{err}");
    assert!(!data.augment, "a rejected setting changes nothing");
    data.set_idx_augment(IdxAugment::Crop, 28).unwrap();
    // CIFAR keeps its own augmentation and takes no IDX setting.
    let c = tempfile::tempdir().unwrap();
    fs::write(c.path().join("train.bin"), cifar_file(30, true, 1)).unwrap();
    fs::write(c.path().join("test.bin"), cifar_file(10, true, 2)).unwrap();
    let mut cifar = Dataset::load(c.path().to_str().unwrap(), 0).unwrap();
    cifar.set_idx_augment(IdxAugment::None, 2).unwrap();
    assert!(cifar.augment && cifar.crop == CIFAR_CROP);
    let err = cifar
        .set_idx_augment(IdxAugment::CropFlip, 2)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(c.path().to_str().unwrap()) && err.contains("IDX data only"),
        "{err}"
    );
}
