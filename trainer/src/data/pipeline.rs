//! The parallel loading pipeline of image folders: worker threads decode,
//! transform and normalise images into batches ahead of the consumer, with
//! at most `prefetch` batches in flight, so memory is bounded by the
//! prefetch depth and never by the size of the data set.
//!
//! Work is handed out one image at a time in batch order (not one batch per
//! worker, as PyTorch's `DataLoader` does), so every thread helps finish
//! the batch the training loop waits for and no batch waits on one slow
//! worker. Every image's random crop and flip come from a generator seeded
//! by the epoch's seed and the image's index, so a batch does not depend on
//! which thread made it or in what order.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::decode::{decode_rgb_into, Rgb};
use super::folder::Item;
use super::transform::{
    eval_crop, random_resized_crop, to_planar, to_planar_normalised, Resampler,
};
use crate::error::Error;
use crate::rng::Rng;

/// Files that failed to load and were skipped, with the reason, shared by
/// every pipeline of a data set (a file is counted once however often it
/// is met).
pub type SkipLog = Arc<Mutex<BTreeMap<PathBuf, String>>>;

/// How images are transformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Augment {
    /// Random resized crop and flip, from generators seeded by this value
    /// and the image's index.
    Train(u64),
    /// Resize and centre crop.
    Eval,
}

/// Loads one image to planar `3 x size x size` bytes: read, decode,
/// transform. One per thread; it keeps its buffers between images.
#[derive(Debug)]
pub struct ImageLoader {
    size: usize,
    resampler: Resampler,
    file: Vec<u8>,
    decoded: Rgb,
    hwc: Vec<u8>,
}

impl ImageLoader {
    /// A loader of `size x size` images.
    pub fn new(size: usize) -> ImageLoader {
        ImageLoader {
            size,
            resampler: Resampler::new(size),
            file: Vec::new(),
            decoded: Rgb {
                pixels: Vec::new(),
                width: 0,
                height: 0,
            },
            hwc: Vec::new(),
        }
    }

    /// Image `index` of a split, `item`, into `out` (`3 * size * size`
    /// bytes); the error says what is wrong with the file.
    pub fn load(
        &mut self,
        item: &Item,
        index: usize,
        augment: Augment,
        out: &mut [u8],
    ) -> Result<(), String> {
        let flip = self.load_interleaved(item, index, augment)?;
        to_planar(&self.hwc, self.size, flip, out);
        Ok(())
    }

    /// [`ImageLoader::load`] to normalised floats.
    pub fn load_normalised(
        &mut self,
        item: &Item,
        index: usize,
        augment: Augment,
        (mean, std): (&[f32; 3], &[f32; 3]),
        out: &mut [f32],
    ) -> Result<(), String> {
        let flip = self.load_interleaved(item, index, augment)?;
        to_planar_normalised(&self.hwc, self.size, flip, mean, std, out);
        Ok(())
    }

    /// Reads, decodes and resizes into `self.hwc`; returns whether the
    /// image is to be flipped.
    fn load_interleaved(
        &mut self,
        item: &Item,
        index: usize,
        augment: Augment,
    ) -> Result<bool, String> {
        use std::io::Read;
        self.file.clear();
        std::fs::File::open(&item.path)
            .and_then(|mut f| f.read_to_end(&mut self.file))
            .map_err(|e| format!("cannot read: {e}"))?;
        decode_rgb_into(&self.file, &mut self.decoded)?;
        let img = &self.decoded;
        let (crop, flip) = match augment {
            Augment::Train(seed) => {
                let mut rng = Rng::new(seed, index as u64);
                let crop = random_resized_crop(img.width, img.height, &mut rng);
                (crop, rng.coin())
            }
            Augment::Eval => (eval_crop(img.width, img.height, self.size), false),
        };
        self.resampler.resize(img, crop, &mut self.hwc);
        Ok(flip)
    }
}

/// What a pipeline produces.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The files of the split.
    pub items: Arc<Vec<Item>>,
    /// Indices into `items` in the order to batch them.
    pub order: Vec<usize>,
    /// Images per batch.
    pub batch_size: usize,
    /// The transform.
    pub augment: Augment,
    /// Side of the output images.
    pub size: usize,
    /// Per-channel normalisation.
    pub mean: [f32; 3],
    /// Per-channel normalisation.
    pub std: [f32; 3],
    /// Skip unreadable files (recorded in `skip_log`) instead of stopping.
    pub skip_bad: bool,
    /// Where skipped files are recorded.
    pub skip_log: SkipLog,
    /// Worker threads.
    pub workers: usize,
    /// Batches in flight ahead of the consumer.
    pub prefetch: usize,
}

/// One finished batch: normalised `n x 3 x size x size` floats and labels.
#[derive(Debug)]
pub struct FloatBatch {
    /// Pixels, image after image.
    pub pixels: Vec<f32>,
    /// Class indices.
    pub labels: Vec<i64>,
}

#[derive(Debug)]
struct Slot {
    pixels: Vec<f32>,
    present: Vec<bool>,
    remaining: usize,
}

#[derive(Debug, Default)]
struct State {
    /// Next position of `order` to hand out.
    next: usize,
    /// Batches taken by the consumer.
    consumed: usize,
    slots: HashMap<usize, Slot>,
    /// Pixel buffers of consumed batches, handed back by
    /// [`Pipeline::recycle`]: a batch of 224x224 images is 38 MB, and a
    /// fresh allocation of that size is page-faulted in at every batch.
    free: Vec<Vec<f32>>,
    error: Option<Error>,
    stop: bool,
}

#[derive(Debug)]
struct Shared {
    plan: Plan,
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn batch_len(&self, b: usize) -> usize {
        let bs = self.plan.batch_size;
        (self.plan.order.len() - b * bs).min(bs)
    }
}

/// Batches of a [`Plan`], made by worker threads; an iterator of results.
/// Dropping it stops the workers.
#[derive(Debug)]
pub struct Pipeline {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    next: usize,
    batches: usize,
}

impl Pipeline {
    /// Starts the workers of `plan`.
    pub fn start(plan: Plan) -> Pipeline {
        assert!(plan.batch_size > 0 && plan.prefetch > 0 && plan.workers > 0);
        let batches = plan.order.len().div_ceil(plan.batch_size);
        let workers = plan.workers.min(plan.order.len().max(1));
        let shared = Arc::new(Shared {
            plan,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let workers = (0..workers)
            .map(|_| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || work(&shared))
            })
            .collect();
        Pipeline {
            shared,
            workers,
            next: 0,
            batches,
        }
    }

    /// Batches not yet taken.
    pub fn remaining(&self) -> usize {
        self.batches - self.next
    }

    /// Hands the pixel buffer of a consumed batch back for reuse.
    pub fn recycle(&self, pixels: Vec<f32>) {
        let mut st = self.shared.state.lock().expect("pipeline lock");
        // No more buffers than batches in flight are ever needed.
        if st.free.len() < self.shared.plan.prefetch {
            st.free.push(pixels);
        }
    }
}

fn work(shared: &Shared) {
    let plan = &shared.plan;
    let image_len = 3 * plan.size * plan.size;
    let mut loader = ImageLoader::new(plan.size);
    let mut floats = vec![0f32; image_len];
    loop {
        let pos = {
            let mut st = shared.state.lock().expect("pipeline lock");
            loop {
                if st.stop || st.error.is_some() || st.next >= plan.order.len() {
                    return;
                }
                if st.next / plan.batch_size < st.consumed + plan.prefetch {
                    break;
                }
                st = shared.changed.wait(st).expect("pipeline lock");
            }
            let pos = st.next;
            st.next += 1;
            let b = pos / plan.batch_size;
            let n = shared.batch_len(b);
            if !st.slots.contains_key(&b) {
                let mut pixels = st.free.pop().unwrap_or_default();
                pixels.resize(n * image_len, 0.0);
                let slot = Slot {
                    pixels,
                    present: vec![false; n],
                    remaining: n,
                };
                st.slots.insert(b, slot);
            }
            pos
        };
        let index = plan.order[pos];
        let item = &plan.items[index];
        let stats = (&plan.mean, &plan.std);
        let result = loader.load_normalised(item, index, plan.augment, stats, &mut floats);
        let mut st = shared.state.lock().expect("pipeline lock");
        let b = pos / plan.batch_size;
        let k = pos % plan.batch_size;
        match result {
            Ok(()) => {
                let slot = st.slots.get_mut(&b).expect("slot of a claimed image");
                slot.pixels[k * image_len..(k + 1) * image_len].copy_from_slice(&floats);
                slot.present[k] = true;
            }
            Err(msg) if plan.skip_bad => {
                plan.skip_log
                    .lock()
                    .expect("skip log lock")
                    .insert(item.path.clone(), msg);
            }
            Err(msg) => {
                st.error.get_or_insert(Error::BadImage {
                    path: item.path.clone(),
                    msg,
                });
                shared.changed.notify_all();
                return;
            }
        }
        let slot = st.slots.get_mut(&b).expect("slot of a claimed image");
        slot.remaining -= 1;
        if slot.remaining == 0 {
            shared.changed.notify_all();
        }
    }
}

impl Iterator for Pipeline {
    type Item = Result<FloatBatch, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let plan = &self.shared.plan;
        let image_len = 3 * plan.size * plan.size;
        while self.next < self.batches {
            let b = self.next;
            let slot = {
                let mut st = self.shared.state.lock().expect("pipeline lock");
                loop {
                    if let Some(e) = st.error.take() {
                        st.stop = true;
                        self.next = self.batches;
                        self.shared.changed.notify_all();
                        return Some(Err(e));
                    }
                    if st.slots.get(&b).is_some_and(|s| s.remaining == 0) {
                        break;
                    }
                    st = self.shared.changed.wait(st).expect("pipeline lock");
                }
                let slot = st.slots.remove(&b).expect("a finished slot");
                st.consumed += 1;
                self.shared.changed.notify_all();
                slot
            };
            self.next += 1;
            let start = b * plan.batch_size;
            let positions = start..start + slot.present.len();
            let mut labels = Vec::with_capacity(slot.present.len());
            let mut pixels = slot.pixels;
            let mut kept = 0;
            for (k, pos) in positions.enumerate() {
                if slot.present[k] {
                    if kept != k {
                        pixels.copy_within(k * image_len..(k + 1) * image_len, kept * image_len);
                    }
                    labels.push(plan.items[plan.order[pos]].label);
                    kept += 1;
                }
            }
            if kept == 0 {
                // Every image of the batch was skipped.
                continue;
            }
            pixels.truncate(kept * image_len);
            return Some(Ok(FloatBatch { pixels, labels }));
        }
        None
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.stop = true;
        }
        self.shared.changed.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Loads `items[range]` with the evaluation transform as planar bytes, on
/// `workers` threads; unreadable files are an error, or with `skip_bad`
/// recorded and returned as `None`.
pub fn load_eval_bytes(
    items: &[Item],
    size: usize,
    workers: usize,
    skip_bad: Option<&SkipLog>,
) -> Result<Vec<Option<Vec<u8>>>, Error> {
    let image_len = 3 * size * size;
    let per = items.len().div_ceil(workers.max(1)).max(1);
    let results: Vec<Result<Vec<Option<Vec<u8>>>, Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|chunk| {
                scope.spawn(move || {
                    let mut loader = ImageLoader::new(size);
                    let mut out = Vec::with_capacity(chunk.len());
                    for item in chunk {
                        let mut buf = vec![0u8; image_len];
                        match loader.load(item, 0, Augment::Eval, &mut buf) {
                            Ok(()) => out.push(Some(buf)),
                            Err(msg) => match skip_bad {
                                Some(log) => {
                                    log.lock()
                                        .expect("skip log lock")
                                        .insert(item.path.clone(), msg);
                                    out.push(None);
                                }
                                None => {
                                    return Err(Error::BadImage {
                                        path: item.path.clone(),
                                        msg,
                                    })
                                }
                            },
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a loading thread panicked"))
            .collect()
    });
    let mut all = Vec::with_capacity(items.len());
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn folder_of_pngs(dir: &Path, n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| {
                let path = dir.join(format!("{i}.png"));
                image::RgbImage::from_fn(12, 10, |x, y| image::Rgb([x as u8, y as u8, i as u8]))
                    .save(&path)
                    .unwrap();
                Item {
                    path,
                    label: (i % 3) as i64,
                }
            })
            .collect()
    }

    fn plan(items: Vec<Item>, prefetch: usize) -> Plan {
        Plan {
            order: (0..items.len()).collect(),
            items: Arc::new(items),
            batch_size: 2,
            augment: Augment::Eval,
            size: 8,
            mean: [0.5; 3],
            std: [0.25; 3],
            skip_bad: false,
            skip_log: SkipLog::default(),
            workers: 3,
            prefetch,
        }
    }

    #[test]
    fn workers_stop_at_the_prefetch_depth() {
        let tmp = tempfile::tempdir().unwrap();
        let items = folder_of_pngs(tmp.path(), 20);
        let mut p = Pipeline::start(plan(items, 2));
        let first = p.next().unwrap().unwrap();
        assert_eq!(first.labels, [0, 1]);
        // However long the consumer waits, no more than `prefetch` batches
        // beyond the one taken are claimed or held.
        std::thread::sleep(std::time::Duration::from_millis(300));
        {
            let st = p.shared.state.lock().unwrap();
            assert_eq!(st.consumed, 1);
            assert_eq!(st.next, (1 + 2) * 2, "claimed images");
            assert!(st.slots.len() <= 2);
        }
        p.recycle(first.pixels);
        let rest: Vec<FloatBatch> = p.by_ref().map(|b| b.unwrap()).collect();
        assert_eq!(rest.len(), 9);
        assert!(rest.iter().all(|b| b.pixels.len() == 2 * 3 * 8 * 8));
    }
}
