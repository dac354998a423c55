//! Work spread over the machine's CPUs: parsing a policy of 100 files at
//! fleet scale takes over a second on one core, and a start or a full
//! replacement waits for all of it.

use std::{
    num::NonZeroUsize,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
};

/// Threads at most: the gains stop at a few cores, and each thread holds
/// the parse of the file it works on.
const MAX_THREADS: usize = 8;

/// `work` applied to every item, results in the items' order. Items are
/// taken one at a time by up to [`MAX_THREADS`] scoped threads (as many as
/// the CPUs this process may use), so one large item does not hold back a
/// share of small ones. One item, or one CPU, runs on the calling thread.
pub fn map<T: Send, R: Send>(items: Vec<T>, work: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(MAX_THREADS)
        .min(items.len());
    if threads <= 1 {
        return items.into_iter().map(work).collect();
    }
    let count = items.len();
    let items: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let results: Vec<Mutex<Option<R>>> = (0..count).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(slot) = items.get(i) else { break };
                        let item = take(slot);
                        let result = work(item);
                        *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                    }
                })
            })
            .collect();
        // Joined, not only waited for: the scope returns once the closures
        // are done, before the threads have run their thread-local
        // destructors, which LeakSanitizer (the fuzz smoke) then counts as
        // leaks.
        for worker in workers {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    results.into_iter().map(|slot| take_owned(slot)).collect()
}

fn take<T>(slot: &Mutex<Option<T>>) -> T {
    slot.lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .expect("each index is taken once")
}

fn take_owned<R>(slot: Mutex<Option<R>>) -> R {
    slot.into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .expect("every index was worked on")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_the_items_order() {
        let items: Vec<u64> = (0..1000).collect();
        let squares = map(items.clone(), |n| n * n);
        assert_eq!(squares, items.iter().map(|n| n * n).collect::<Vec<_>>());
    }

    #[test]
    fn no_items_give_no_results() {
        assert!(map(Vec::<u8>::new(), |n| n).is_empty());
    }
}
