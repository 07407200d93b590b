//! Single-thread decode time of JPEG decoder crates on the files of a
//! folder, for choosing the pipeline's decoder (see BENCHMARKS.md).
//!
//! ```sh
//! cargo run --release -p trainer --example decode_bench -- FOLDER/train/class0 [--rounds 3]
//! ```
//!
//! Measures zune-jpeg (the pipeline's decoder), `image` (which wraps
//! zune-jpeg since 0.25, plus its own buffer handling), jpeg-decoder, and
//! jpeg-decoder's DCT-domain downscaling to 1/2 and 1/4 of the size (the
//! scaled IDCT that libjpeg calls `scale_denom`), then the resize of the
//! pipeline's evaluation transform. Prints one JSON object of
//! milliseconds per image (median over rounds).

use std::path::PathBuf;
use std::time::Instant;

use trainer::data::decode::decode_rgb;
use trainer::data::transform::{eval_crop, Resampler};

fn time_per_image(files: &[Vec<u8>], rounds: usize, mut f: impl FnMut(&[u8])) -> f64 {
    let mut per = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        for b in files {
            f(b);
        }
        per.push(start.elapsed().as_secs_f64() * 1e3 / files.len() as f64);
    }
    per.sort_by(f64::total_cmp);
    per[per.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .expect("usage: decode_bench FOLDER [--rounds N]"),
    );
    let rounds = match (args.next().as_deref(), args.next()) {
        (Some("--rounds"), Some(n)) => n.parse().expect("a number of rounds"),
        _ => 3,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("a folder")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg")))
        .collect();
    paths.sort();
    let files: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::fs::read(p).expect("readable"))
        .collect();
    assert!(!files.is_empty(), "no .jpg file in {}", dir.display());
    let zune = time_per_image(&files, rounds, |b| {
        std::hint::black_box(decode_rgb(b).expect("decodes"));
    });
    let image = time_per_image(&files, rounds, |b| {
        std::hint::black_box(
            image::load_from_memory_with_format(b, image::ImageFormat::Jpeg)
                .expect("decodes")
                .to_rgb8(),
        );
    });
    let jpeg_decoder = |scale: u16| {
        time_per_image(&files, rounds, |b| {
            let mut d = jpeg_decoder::Decoder::new(b);
            d.read_info().expect("a header");
            let info = d.info().expect("info");
            if scale > 1 {
                d.scale(info.width / scale, info.height / scale)
                    .expect("scales");
            }
            std::hint::black_box(d.decode().expect("decodes"));
        })
    };
    let (jd1, jd2, jd4) = (jpeg_decoder(1), jpeg_decoder(2), jpeg_decoder(4));
    let decoded: Vec<_> = files
        .iter()
        .map(|b| decode_rgb(b).expect("decodes"))
        .collect();
    let mut resampler = Resampler::new(224);
    let mut out = Vec::new();
    let mut k = 0;
    let resize = time_per_image(&files, rounds, |_| {
        let img = &decoded[k % decoded.len()];
        k += 1;
        resampler.resize(img, eval_crop(img.width, img.height, 224), &mut out);
    });
    println!(
        "{}",
        serde_json::json!({"files": files.len(), "ms_per_image": {
            "zune-jpeg": zune, "image": image, "jpeg-decoder": jd1,
            "jpeg-decoder scale 1/2": jd2, "jpeg-decoder scale 1/4": jd4,
            "resize to 224 (fast_image_resize)": resize}})
    );
}
