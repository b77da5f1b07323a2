//! A deterministic, prefetching batch loader.
//!
//! Determinism contract: the batch sequence is a pure function of (dataset, batch size, seed).
//! Epoch `e` visits the samples in a permutation drawn from a ChaCha8 stream keyed by
//! (seed, e), and the sample at position `p` of epoch `e` augments with a stream keyed by
//! (seed, e, p). Nothing depends on thread count or on where the run started, so a loader
//! built at `Position { epoch, index }` continues exactly where an uninterrupted one would be.
//!
//! Concurrency: worker `w` of `W` builds global batches `w, w+W, w+2W, ...` and sends them on
//! its own bounded channel; the consumer receives round-robin, so batches arrive in order
//! without a reorder buffer and at most about `prefetch` batches wait in memory.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::rng::{domain, keyed};
use crate::{DataError, Dataset};

/// A batch of samples, row-major NCHW.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `B * C * H * W` values.
    pub images: Vec<f32>,
    /// One label per sample (0 when the dataset is unlabelled).
    pub labels: Vec<i64>,
    /// `[B, C, H, W]`.
    pub shape: [usize; 4],
}

/// Where a loader stands: `index` samples of epoch `epoch` have been consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Zero-based epoch.
    pub epoch: u64,
    /// Samples already consumed in `epoch`.
    pub index: u64,
}

/// The fixed schedule of batches: global batch `k` -> (epoch, first position in the epoch).
#[derive(Clone, Copy, Debug)]
struct Plan {
    len: u64,
    batch: u64,
    start: Position,
}

impl Plan {
    /// Batches in every full epoch (`drop_last`: the tail shorter than a batch is skipped).
    fn per_epoch(&self) -> u64 {
        self.len / self.batch
    }

    /// (epoch, position) of global batch `k`, counted from `start`.
    fn batch_at(&self, k: u64) -> Position {
        // Batches left in the starting epoch; none if the start sits in its dropped tail.
        let first = (self.len - self.start.index) / self.batch;
        if k < first {
            Position {
                epoch: self.start.epoch,
                index: self.start.index + k * self.batch,
            }
        } else {
            let k = k - first;
            Position {
                epoch: self.start.epoch + 1 + k / self.per_epoch(),
                index: (k % self.per_epoch()) * self.batch,
            }
        }
    }
}

/// This process's part of every global batch in data-parallel training: of `world` equal parts,
/// the `rank`-th (contiguous), so that the ranks together see exactly the samples, order and
/// augmentations of one process loading the whole batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
}

impl Shard {
    /// One process reads everything.
    pub const WHOLE: Shard = Shard { rank: 0, world: 1 };
}

/// State shared by the workers.
struct Shared {
    ds: Arc<dyn Dataset>,
    plan: Plan,
    seed: u64,
    shard: Shard,
    stop: AtomicBool,
}

/// Loads batches on background threads in a reproducible order.
pub struct Loader {
    shared: Arc<Shared>,
    receivers: Vec<Receiver<Result<Batch, DataError>>>,
    handles: Vec<JoinHandle<()>>,
    /// Global index of the next batch to hand out.
    next: u64,
    /// The first failure, repeated by every later call (the failing worker has stopped).
    failed: Option<DataError>,
}

impl Loader {
    /// Starts `workers` threads that prepare batches of `batch_size` from `start` on, keeping
    /// about `prefetch` batches ready.
    pub fn new(
        ds: Arc<dyn Dataset>,
        batch_size: usize,
        seed: u64,
        start: Position,
        workers: usize,
        prefetch: usize,
    ) -> Result<Self, DataError> {
        Self::sharded(ds, batch_size, seed, start, workers, prefetch, Shard::WHOLE)
    }

    /// [`Loader::new`] for one rank of a data-parallel job: `batch_size` is the global batch
    /// (positions, epochs and resume points count it), and each batch handed out is `shard`'s
    /// part of it, `batch_size / shard.world` samples.
    pub fn sharded(
        ds: Arc<dyn Dataset>,
        batch_size: usize,
        seed: u64,
        start: Position,
        workers: usize,
        prefetch: usize,
        shard: Shard,
    ) -> Result<Self, DataError> {
        let len = ds.len();
        if batch_size == 0 {
            return Err(DataError::config("batch_size", "must be at least 1"));
        }
        if shard.world == 0 || shard.rank >= shard.world || !batch_size.is_multiple_of(shard.world)
        {
            return Err(DataError::config(
                "batch_size",
                format!(
                    "{batch_size} does not split evenly over {} processes",
                    shard.world
                ),
            ));
        }
        if batch_size > len {
            return Err(DataError::config(
                "batch_size",
                format!(
                    "{batch_size} is larger than the dataset ({len} samples): {}",
                    ds.describe()
                ),
            ));
        }
        if workers == 0 {
            return Err(DataError::config("data.workers", "must be at least 1"));
        }
        if start.index > len as u64 {
            return Err(DataError::config(
                "resume position",
                format!(
                    "sample {} of epoch {} is past the end of the dataset ({len} samples); was the dataset changed?",
                    start.index, start.epoch
                ),
            ));
        }
        let plan = Plan {
            len: len as u64,
            batch: batch_size as u64,
            start,
        };
        let shared = Arc::new(Shared {
            ds,
            plan,
            seed,
            shard,
            stop: AtomicBool::new(false),
        });
        // Split the prefetch budget over the per-worker queues (a worker also holds the batch
        // it is building, so the total in flight is about prefetch + workers).
        let depth = prefetch.div_ceil(workers);
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = mpsc::sync_channel(depth);
            let sh = Arc::clone(&shared);
            let spawned = thread::Builder::new()
                .name(format!("gantry-data-{w}"))
                .spawn(move || worker(&sh, w, workers, &tx));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    shared.stop.store(true, Ordering::SeqCst);
                    drop(receivers);
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(DataError::worker(w, format!("cannot start thread: {e}")));
                }
            }
            receivers.push(rx);
        }
        Ok(Loader {
            shared,
            receivers,
            handles,
            next: 0,
            failed: None,
        })
    }

    /// The next batch, in the deterministic order; a worker's failure comes out here as `Err`.
    pub fn next_batch(&mut self) -> Result<Batch, DataError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let w = (self.next % self.receivers.len() as u64) as usize;
        let got = match self.receivers[w].recv() {
            Ok(r) => r,
            Err(_) => Err(DataError::worker(w, "stopped unexpectedly")),
        };
        match got {
            Ok(b) => {
                self.next += 1;
                Ok(b)
            }
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The position just after the last batch returned (where the next batch starts; after
    /// the last batch of an epoch that is `{ epoch + 1, 0 }`).
    pub fn position(&self) -> Position {
        self.shared.plan.batch_at(self.next)
    }

    /// Batches per epoch, `floor(len / batch_size)`.
    pub fn batches_per_epoch(&self) -> u64 {
        self.shared.plan.per_epoch()
    }

    /// The dataset being loaded.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.shared.ds
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Stop flag first (checked between samples), then close the channels so a worker
        // blocked on a full queue wakes up with a send error, then wait for all of them.
        self.shared.stop.store(true, Ordering::SeqCst);
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Worker `w` of `n`: builds batches `w, w + n, ...` until told to stop or an error occurs.
fn worker(sh: &Shared, w: usize, n: usize, tx: &SyncSender<Result<Batch, DataError>>) {
    let mut perm: Option<(u64, Vec<usize>)> = None;
    let mut k = w as u64;
    while !sh.stop.load(Ordering::Relaxed) {
        let at = sh.plan.batch_at(k);
        let built = panic::catch_unwind(AssertUnwindSafe(|| build(sh, at, &mut perm)))
            .unwrap_or_else(|p| {
                Err(DataError::worker(
                    w,
                    format!("panicked: {}", panic_text(&*p)),
                ))
            });
        let Some(result) = built.transpose() else {
            return; // stopped mid-batch
        };
        let failed = result.is_err();
        if tx.send(result).is_err() || failed {
            return;
        }
        k += n as u64;
    }
}

/// Builds the batch starting at `at`; `Ok(None)` if the loader was dropped meanwhile.
fn build(
    sh: &Shared,
    at: Position,
    perm: &mut Option<(u64, Vec<usize>)>,
) -> Result<Option<Batch>, DataError> {
    let order = match perm {
        Some((e, order)) if *e == at.epoch => order,
        _ => {
            &mut perm
                .insert((at.epoch, epoch_order(sh.ds.len(), sh.seed, at.epoch)))
                .1
        }
    };
    let [c, h, wd] = sh.ds.sample_shape();
    let numel = c * h * wd;
    let b = sh.plan.batch as usize / sh.shard.world;
    let first = at.index + (sh.shard.rank * b) as u64;
    let mut images = vec![0f32; b * numel];
    let mut labels = Vec::with_capacity(b);
    for (i, out) in images.chunks_exact_mut(numel).enumerate() {
        if sh.stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let pos = first + i as u64;
        let mut rng = keyed(sh.seed, domain::AUGMENT, at.epoch, pos);
        labels.push(sh.ds.load_into(order[pos as usize], out, &mut rng)?);
    }
    Ok(Some(Batch {
        images,
        labels,
        shape: [b, c, h, wd],
    }))
}

/// The visiting order of epoch `epoch`: a permutation of `0..len` keyed by (seed, epoch).
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut keyed(seed, domain::SHUFFLE, epoch, 0));
    order
}

fn panic_text(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_chacha::ChaCha8Rng;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    /// Sample i is [i, augmentation draw]; label i. Optionally fails or panics at one index.
    struct Probe {
        len: usize,
        fail_at: Option<usize>,
        panic_at: Option<usize>,
        delay: Duration,
        loads: AtomicUsize,
    }

    impl Probe {
        fn new(len: usize) -> Probe {
            Probe {
                len,
                fail_at: None,
                panic_at: None,
                delay: Duration::ZERO,
                loads: AtomicUsize::new(0),
            }
        }
    }

    impl Dataset for Probe {
        fn len(&self) -> usize {
            self.len
        }
        fn sample_shape(&self) -> [usize; 3] {
            [2, 1, 1]
        }
        fn num_classes(&self) -> Option<usize> {
            None
        }
        fn describe(&self) -> String {
            format!("probe ({} samples)", self.len)
        }
        fn load_into(
            &self,
            index: usize,
            out: &mut [f32],
            rng: &mut ChaCha8Rng,
        ) -> Result<i64, DataError> {
            self.loads.fetch_add(1, Ordering::Relaxed);
            thread::sleep(self.delay);
            if self.fail_at == Some(index) {
                return Err(DataError::decode(
                    std::path::Path::new("/probe/bad.png"),
                    "boom",
                ));
            }
            assert!(self.panic_at != Some(index), "probe panic at {index}");
            out[0] = index as f32;
            out[1] = rng.gen::<f32>();
            Ok(index as i64)
        }
    }

    fn take(
        ds: Arc<dyn Dataset>,
        bs: usize,
        seed: u64,
        start: Position,
        workers: usize,
        n: usize,
    ) -> Vec<Batch> {
        // Vary the queue depth with the worker count so both are exercised.
        let mut l = Loader::new(ds, bs, seed, start, workers, workers - 1).unwrap();
        (0..n).map(|_| l.next_batch().unwrap()).collect()
    }

    #[test]
    fn same_seed_same_batches_regardless_of_workers() {
        let ds: Arc<dyn Dataset> = Arc::new(Probe::new(50));
        let a = take(ds.clone(), 8, 1, Position::default(), 1, 20);
        let b = take(ds.clone(), 8, 1, Position::default(), 3, 20);
        assert_eq!(a, b);
        assert_eq!(a[0].shape, [8, 2, 1, 1]);
        assert_eq!(a[0].images.len(), 16);
        let c = take(ds, 8, 2, Position::default(), 2, 20);
        assert_ne!(a, c);
    }

    #[test]
    fn epochs_are_permutations_with_drop_last() {
        let ds: Arc<dyn Dataset> = Arc::new(Probe::new(10));
        let mut l = Loader::new(ds, 3, 9, Position::default(), 2, 2).unwrap();
        assert_eq!(l.batches_per_epoch(), 3);
        let mut epochs = Vec::new();
        for _ in 0..3 {
            let mut seen = Vec::new();
            for _ in 0..3 {
                let at = l.position();
                let b = l.next_batch().unwrap();
                // Each sample's augmentation stream is keyed by its (epoch, position).
                for (j, pair) in b.images.chunks_exact(2).enumerate() {
                    let pos = at.index + j as u64;
                    let want = keyed(9, domain::AUGMENT, at.epoch, pos).gen::<f32>();
                    assert_eq!(pair[1], want, "augmentation stream at {at:?} + {j}");
                }
                seen.extend(b.labels);
            }
            assert_eq!(seen.len(), 9);
            let mut sorted = seen.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 9, "duplicate within an epoch: {seen:?}");
            epochs.push(seen);
        }
        assert_eq!(l.position(), Position { epoch: 3, index: 0 });
        assert_ne!(epochs[0], epochs[1]);
        // The epoch order is the documented keyed permutation.
        let order = epoch_order(10, 9, 1);
        let want: Vec<i64> = order[..9].iter().map(|&i| i as i64).collect();
        assert_eq!(epochs[1], want);
    }

    #[test]
    fn resuming_from_a_position_continues_identically() {
        let ds: Arc<dyn Dataset> = Arc::new(Probe::new(23));
        let bs = 5; // 4 batches per epoch
        let full = take(ds.clone(), bs, 42, Position::default(), 2, 14);
        let mut l = Loader::new(ds.clone(), bs, 42, Position::default(), 3, 1).unwrap();
        for (done, expected) in full.iter().enumerate() {
            let pos = l.position();
            let resumed = take(ds.clone(), bs, 42, pos, 2, 14 - done);
            assert_eq!(resumed, full[done..], "resume from {pos:?}");
            assert_eq!(&l.next_batch().unwrap(), expected);
        }
        assert_eq!(
            l.position(),
            Position {
                epoch: 3,
                index: 10
            }
        );

        // A position in the dropped tail (index 20 of 23) rolls over to the next epoch.
        let tail = take(
            ds.clone(),
            bs,
            42,
            Position {
                epoch: 0,
                index: 20,
            },
            1,
            2,
        );
        assert_eq!(tail, full[4..6]);
        // An unaligned position (e.g. after a batch-size change) starts right there.
        let odd = take(ds, bs, 42, Position { epoch: 1, index: 2 }, 1, 1);
        let order = epoch_order(23, 42, 1);
        let want: Vec<i64> = order[2..7].iter().map(|&i| i as i64).collect();
        assert_eq!(odd[0].labels, want);
    }

    #[test]
    fn invalid_arguments_are_errors_naming_the_numbers() {
        let ds: Arc<dyn Dataset> = Arc::new(Probe::new(50));
        let e = Loader::new(ds.clone(), 64, 0, Position::default(), 2, 4)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("batch_size: 64 is larger than the dataset (50 samples)"),
            "{e}"
        );
        assert!(Loader::new(ds.clone(), 0, 0, Position::default(), 2, 4).is_err());
        assert!(Loader::new(ds.clone(), 5, 0, Position::default(), 0, 4).is_err());
        let e = Loader::new(
            ds,
            5,
            0,
            Position {
                epoch: 2,
                index: 51,
            },
            1,
            4,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("51") && e.contains("50 samples"), "{e}");
    }

    /// Two shards of a global batch are, side by side, the whole batch.
    #[test]
    fn shards_split_every_global_batch_into_contiguous_parts() {
        let ds: Arc<dyn Dataset> = Arc::new(Probe::new(23));
        let whole = |n: usize| {
            let mut l = Loader::new(ds.clone(), 6, 7, Position::default(), 2, 2).unwrap();
            (0..n).map(|_| l.next_batch().unwrap()).collect::<Vec<_>>()
        };
        let part = |rank: usize, n: usize| {
            let shard = Shard { rank, world: 2 };
            let mut l =
                Loader::sharded(ds.clone(), 6, 7, Position::default(), 1, 2, shard).unwrap();
            let batches: Vec<Batch> = (0..n).map(|_| l.next_batch().unwrap()).collect();
            (batches, l.position())
        };
        let all = whole(8);
        let (a, pa) = part(0, 8);
        let (b, pb) = part(1, 8);
        assert_eq!(pa, pb);
        for ((w, a), b) in all.iter().zip(&a).zip(&b) {
            assert_eq!(a.shape[0], 3);
            assert_eq!([a.labels.clone(), b.labels.clone()].concat(), w.labels);
            assert_eq!([a.images.clone(), b.images.clone()].concat(), w.images);
        }
        let e = Loader::sharded(
            ds,
            5,
            7,
            Position::default(),
            1,
            2,
            Shard { rank: 0, world: 2 },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("5 does not split evenly over 2 processes"),
            "{e}"
        );
    }

    #[test]
    fn worker_errors_and_panics_come_out_as_err() {
        let mut p = Probe::new(12);
        p.fail_at = Some(epoch_order(12, 5, 0)[7]); // 2nd batch of size 4
        let mut l = Loader::new(Arc::new(p), 4, 5, Position::default(), 2, 2).unwrap();
        assert!(l.next_batch().is_ok());
        let e = l.next_batch().unwrap_err();
        assert_eq!(e.to_string(), "/probe/bad.png: cannot decode image: boom");
        assert_eq!(l.position(), Position { epoch: 0, index: 4 });
        assert_eq!(l.next_batch().unwrap_err(), e, "the error is sticky");

        let mut p = Probe::new(12);
        p.panic_at = Some(epoch_order(12, 5, 0)[0]);
        let mut l = Loader::new(Arc::new(p), 4, 5, Position::default(), 3, 2).unwrap();
        let e = l.next_batch().unwrap_err().to_string();
        assert!(
            e.starts_with("data loader worker 0: panicked: probe panic at"),
            "{e}"
        );
    }

    #[test]
    fn dropping_stops_workers_promptly() {
        let mut p = Probe::new(10_000);
        p.delay = Duration::from_millis(1);
        let p = Arc::new(p);
        let mut l = Loader::new(p.clone(), 100, 0, Position::default(), 3, 4).unwrap();
        l.next_batch().unwrap();
        // Give the workers time for ~5 batches each; the bounded queues (2 per worker plus the
        // batch in hand) must hold them to 3 each, i.e. 1 consumed + 9 = 1000 loads at most.
        thread::sleep(Duration::from_millis(600));
        let t = Instant::now();
        drop(l);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "drop took {:?}",
            t.elapsed()
        );
        // Workers stopped: no further loads happen after drop returned.
        let after = p.loads.load(Ordering::Relaxed);
        thread::sleep(Duration::from_millis(30));
        assert_eq!(p.loads.load(Ordering::Relaxed), after);
        assert!(
            after <= 1000 + 3,
            "workers ran ahead of the queue bound: {after} loads"
        );
        // Dropping a loader that never handed out a batch is fine too.
        drop(Loader::new(p, 100, 0, Position::default(), 2, 0).unwrap());
    }
}
