//! Throughput of the image-folder pipeline alone (read, decode, transform,
//! normalise, batch into a tensor), for `bench/image_bench.sh`.
//!
//! ```sh
//! cargo run --release -p trainer --example image_pipeline -- FOLDER/train \
//!     --workers 2 --batch-size 64 --image-size 224 --rounds 5 [--eval]
//! ```
//!
//! Every round is one pass over all files of the folder (a shuffled order
//! per round, as `DataLoader(shuffle=True)`), with the training transform
//! (or the evaluation transform with `--eval`). Prints one JSON object:
//! images per second of every round, their median, and the peak resident
//! memory of the process.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tch::Tensor;
use trainer::data::folder::{Item, IMAGENET_MEAN, IMAGENET_STD};
use trainer::data::pipeline::{Augment, Pipeline, Plan};
use trainer::rng::Rng;

fn main() {
    // As the trainer binary does: freed batches are reused, not returned
    // to the kernel and faulted in again.
    trainer::runtime::keep_freed_memory();
    // The batch tensor is made on this thread alone (torchvision's side
    // runs with torch.set_num_threads(1) too).
    tch::set_num_threads(1);
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let (mut workers, mut batch, mut size, mut rounds, mut eval, mut prefetch) =
        (2usize, 64usize, 224usize, 5usize, false, 2usize);
    while let Some(a) = args.next() {
        let mut num = || -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .expect("a number after the flag")
        };
        match a.as_str() {
            "--workers" => workers = num(),
            "--batch-size" => batch = num(),
            "--image-size" => size = num(),
            "--rounds" => rounds = num(),
            "--prefetch" => prefetch = num(),
            "--eval" => eval = true,
            _ => dir = Some(PathBuf::from(a)),
        }
    }
    let dir = dir.expect("usage: image_pipeline CLASS_FOLDERS_DIR [--workers N] ...");
    let classes = trainer::data::folder::find_classes(&dir).expect("class folders");
    let mut items = Vec::new();
    for (k, c) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(c))
            .expect("a class folder")
            .map(|e| e.expect("an entry").path())
            .collect();
        files.sort();
        items.extend(files.into_iter().map(|path| Item {
            path,
            label: k as i64,
        }));
    }
    let items = Arc::new(items);
    let mut rates = Vec::new();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..items.len()).collect();
        Rng::new(0, round as u64).shuffle(&mut order);
        let start = Instant::now();
        let mut pipeline = Pipeline::start(Plan {
            items: Arc::clone(&items),
            order,
            batch_size: batch,
            augment: if eval {
                Augment::Eval
            } else {
                Augment::Train(round as u64)
            },
            size,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            skip_bad: false,
            skip_log: Arc::new(Mutex::new(Default::default())),
            workers,
            prefetch,
        });
        let mut n = 0;
        while let Some(b) = pipeline.next() {
            let b = b.expect("every image loads");
            let k = b.labels.len() as i64;
            let images = Tensor::from_slice(&b.pixels).view([k, 3, size as i64, size as i64]);
            pipeline.recycle(b.pixels);
            let labels = Tensor::from_slice(&b.labels);
            n += images.size()[0] as usize;
            drop((images, labels));
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({"impl": "trainer", "images": items.len(), "workers": workers,
            "batch_size": batch, "image_size": size, "eval": eval, "rounds": rates,
            "median_images_per_s": median, "peak_rss_mib": peak_kb as f64 / 1024.0})
    );
}
