//! The wait hub: the threads that sleep in the kernel on behalf of every
//! [`AsyncSubscriber`](crate::AsyncSubscriber) of this process, and wake their tasks.
//!
//! A futex is not a file descriptor, so an executor cannot poll it. Instead, one hub thread
//! sleeps with `futex_waitv(2)` on the `wake_seq` word of up to [`SEGMENTS_PER_THREAD`]
//! segments at once, plus a private control word that tasks raise when the set of words or
//! expected values changes. Subscribers of the same segment (same device and inode) share one
//! entry, so N async subscribers on M segments cost `ceil(M / 127)` threads, however large N.
//! The hub is one more parked reader to the producer, which is unchanged: no system call while
//! nobody waits, and one `FUTEX_WAKE` that the hub (like every woken reader) relays to two more
//! waiters (docs/LAYOUT.md, "Waiting and waking", reader step 7).
//!
//! A task parks (reader steps 1–5 in [`crate::AsyncSubscriber`]) by leaving its waker here with
//! the `wake_seq` value `v` it loaded; the hub wakes it once the word is no longer `v`, at its
//! deadline (a bounded wait: throttled producer, no `membarrier`, no write access), or when the
//! producer is found dead. Every [`LIVENESS_INTERVAL`] the hub checks the producer's liveness
//! lock of every segment that has waiters, and whether the segment's next sequence number
//! moved while they stayed parked (a lost wake-up: a producer that does not wake, a broken
//! relay): then it wakes them, so a task's park is bounded as a blocking reader's is.
//!
//! Without `futex_waitv` (Linux before 5.16, a seccomp filter that refuses it, or
//! `SHMCAST_NO_FUTEX_WAITV` set) the hub cannot sleep on segment words: it looks at them every
//! [`FALLBACK_POLL`] while some task waits (about a thousand wake-ups a second of one thread
//! per 127 segments), and sleeps without a deadline while none does.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::liveness;
use crate::ring::Ring;
use crate::wait::{relay, LIVENESS_INTERVAL};
use crate::waitv::{self, Word};

/// Segments one hub thread sleeps on: `futex_waitv`'s limit, less the control word.
pub(crate) const SEGMENTS_PER_THREAD: usize = waitv::MAX_WORDS - 1;

/// How often a hub looks at its segments' words where `futex_waitv` is unavailable.
pub(crate) const FALLBACK_POLL: Duration = Duration::from_millis(1);

/// The process's hub threads.
static HUB: OnceLock<Mutex<Vec<Arc<HubThread>>>> = OnceLock::new();

/// Attachment ids, unique in the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One hub thread and what it sleeps on.
#[derive(Default)]
struct HubThread {
    /// The control word (private): incremented, then woken, whenever the thread must rebuild
    /// its list of words before it sleeps again.
    ctl: AtomicU32,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    segments: Vec<Segment>,
    /// When the thread's current sleep ends, if it has a deadline.
    until: Option<Instant>,
}

/// A segment some async subscribers of this process read, keyed by device and inode.
struct Segment {
    key: (u64, u64),
    /// A duplicate of a subscriber's descriptor, to check the producer's liveness lock.
    file: File,
    /// The attached subscribers and their mappings (all the same futex: the kernel keys it by
    /// file and offset). The hub uses the first; an entry is removed, under the lock, before
    /// its mapping is unmapped.
    words: Vec<Member>,
    /// The segment's next sequence number at the last liveness check: if it moved while tasks
    /// stayed parked, a wake-up was lost (a producer that does not wake, a broken relay), and
    /// the tasks are woken to look (the blocking reader's park cap, for the hub's tasks).
    seen_next: u64,
    waiters: Vec<Waiter>,
    /// Set once the producer was found dead (it stays dead: a new producer makes a new file).
    dead: Arc<AtomicBool>,
    next_check: Instant,
    /// The value the hub's current sleep expects of `wake_seq`, if it sleeps on this segment.
    waiting_on: Option<u32>,
}

/// One attached subscriber: its id, the address of `wake_seq` in its mapping, and its mapping's
/// ring (for [`Segment::seen_next`]).
struct Member {
    id: u64,
    addr: usize,
    ring: Ring<'static>,
}

struct Waiter {
    id: u64,
    v: u32,
    waker: Waker,
    deadline: Option<Instant>,
}

/// An async subscriber's place in the hub: its segment's entry. Dropping it (before the
/// subscriber's mapping) removes its word and any waker it left.
pub(crate) struct Attachment {
    thread: Arc<HubThread>,
    key: (u64, u64),
    id: u64,
    dead: Arc<AtomicBool>,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("key", &self.key)
            .field("id", &self.id)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The hub's state stays consistent at every unlock; a panic elsewhere does not poison it
    // for the rest of the process.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The word at `addr`.
///
/// # Safety
/// `addr` must be the address of a `wake_seq` word of a mapping that stays mapped while the
/// returned reference is used: one of a [`Segment`]'s `words`, used under the thread's lock
/// (an [`Attachment`] removes its word under that lock before its mapping is unmapped).
unsafe fn word<'a>(addr: usize) -> &'a AtomicU32 {
    // SAFETY: by the caller's contract the 4-byte-aligned word is mapped; every process
    // accesses it only atomically (docs/LAYOUT.md), and this creates no `&u32`.
    unsafe { &*(addr as *const AtomicU32) }
}

/// Attaches a subscriber whose segment file is `file` and whose mapping's `wake_seq` and ring
/// are `wake_seq` and `ring`.
///
/// # Safety
/// The mapping behind `wake_seq` and `ring` must stay mapped until the returned attachment is
/// dropped (the hub uses them, under its lock, for as long as the attachment is registered).
pub(crate) unsafe fn attach(
    file: &File,
    wake_seq: &AtomicU32,
    ring: Ring<'_>,
) -> std::io::Result<Attachment> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata()?;
    let key = (meta.dev(), meta.ino());
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let addr = wake_seq.as_ptr() as usize;
    // SAFETY: only the lifetime changes; by the caller's contract the ring's memory outlives
    // the attachment, and the hub uses it only under the lock while the attachment is
    // registered (its Drop removes it under that lock).
    let ring = unsafe { std::mem::transmute::<Ring<'_>, Ring<'static>>(ring) };
    let member = Member { id, addr, ring };
    let mut threads = lock(HUB.get_or_init(Default::default));
    // The segment's entry, wherever it is.
    for thread in threads.iter() {
        let mut st = lock(&thread.state);
        if let Some(seg) = st.segments.iter_mut().find(|s| s.key == key) {
            seg.words.push(member);
            let dead = seg.dead.clone();
            return Ok(Attachment {
                thread: thread.clone(),
                key,
                id,
                dead,
            });
        }
    }
    let segment = Segment {
        key,
        file: file.try_clone()?,
        seen_next: ring.snapshot().next_seq,
        words: vec![member],
        waiters: Vec::new(),
        dead: Arc::new(AtomicBool::new(false)),
        next_check: Instant::now(),
        waiting_on: None,
    };
    let dead = segment.dead.clone();
    // A new entry goes to the first thread with room, or to a new thread.
    for thread in threads.iter() {
        let mut st = lock(&thread.state);
        if st.segments.len() < SEGMENTS_PER_THREAD {
            st.segments.push(segment);
            return Ok(Attachment {
                thread: thread.clone(),
                key,
                id,
                dead,
            });
        }
    }
    let thread = Arc::new(HubThread::default());
    lock(&thread.state).segments.push(segment);
    let runner = thread.clone();
    std::thread::Builder::new()
        .name("shmcast-wait-hub".into())
        .spawn(move || run(&runner))?;
    threads.push(thread.clone());
    Ok(Attachment {
        thread,
        key,
        id,
        dead,
    })
}

impl Attachment {
    /// Whether the hub found the segment's producer dead.
    pub(crate) fn producer_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Leaves `waker` to be woken once `wake_seq` is no longer `v`, at `deadline`, or when the
    /// producer is found dead (replacing what this attachment left before). Makes a system call
    /// only when the hub's current sleep does not already cover it.
    pub(crate) fn park(&self, v: u32, waker: &Waker, deadline: Option<Instant>) {
        let mut st = lock(&self.thread.state);
        let until = st.until;
        let Some(seg) = st.segments.iter_mut().find(|s| s.key == self.key) else {
            waker.wake_by_ref();
            return;
        };
        if seg.dead.load(Ordering::Relaxed) {
            drop(st);
            waker.wake_by_ref();
            return;
        }
        match seg.waiters.iter_mut().find(|w| w.id == self.id) {
            Some(w) => {
                w.v = v;
                w.deadline = deadline;
                if !w.waker.will_wake(waker) {
                    w.waker = waker.clone();
                }
            }
            None => seg.waiters.push(Waiter {
                id: self.id,
                v,
                waker: waker.clone(),
                deadline,
            }),
        }
        let covered =
            seg.waiting_on == Some(v) && deadline.map_or(true, |d| until.is_some_and(|u| u <= d));
        drop(st);
        if !covered {
            self.thread.ctl.fetch_add(1, Ordering::Release);
            waitv::wake_private(&self.thread.ctl, 1);
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut st = lock(&self.thread.state);
        if let Some(i) = st.segments.iter().position(|s| s.key == self.key) {
            let seg = &mut st.segments[i];
            seg.words.retain(|m| m.id != self.id);
            seg.waiters.retain(|w| w.id != self.id);
            if seg.words.is_empty() {
                st.segments.swap_remove(i);
            }
        }
        // The hub may be about to sleep on this mapping's word: make it rebuild its list (its
        // sleep would fail with EFAULT or EAGAIN anyway, the control word having changed).
        self.thread.ctl.fetch_add(1, Ordering::Release);
        drop(st);
        waitv::wake_private(&self.thread.ctl, 1);
    }
}

/// A hub thread: build the list of words under the lock, wake what is due, sleep, repeat.
fn run(thread: &HubThread) {
    let use_waitv = waitv::available();
    let mut wake: Vec<Waker> = Vec::new();
    let mut words: Vec<Word> = Vec::new();
    let mut relays: Vec<((u64, u64), u32)> = Vec::new();
    loop {
        words.clear();
        let deadline;
        {
            let mut st = lock(&thread.state);
            // Read under the lock: a change after this makes the sleep below return at once.
            let ctl = thread.ctl.load(Ordering::Acquire);
            words.push(Word::private(&thread.ctl, ctl));
            let now = Instant::now();
            let mut next = None;
            for seg in st.segments.iter_mut() {
                let Some(member) = seg.words.first() else {
                    continue;
                };
                // SAFETY: `addr` is one of `seg.words`, used under the lock (see `word`).
                let wake_seq = unsafe { word(member.addr) };
                let ring = member.ring;
                let cur = wake_seq.load(Ordering::Acquire);
                if let Some(v) = seg.waiting_on.take() {
                    if v != cur {
                        relays.push((seg.key, v));
                    }
                }
                if seg.waiters.is_empty() {
                    continue;
                }
                let mut moved = false;
                if now >= seg.next_check {
                    seg.next_check = now + LIVENESS_INTERVAL;
                    if !liveness::is_locked(&seg.file).unwrap_or(true) {
                        seg.dead.store(true, Ordering::Release);
                    }
                    let next = ring.snapshot().next_seq;
                    moved = next != seg.seen_next;
                    seg.seen_next = next;
                }
                let dead = seg.dead.load(Ordering::Relaxed);
                seg.waiters.retain(|w| {
                    let due = dead || moved || w.v != cur || w.deadline.is_some_and(|d| d <= now);
                    if due {
                        wake.push(w.waker.clone());
                    }
                    !due
                });
                if seg.waiters.is_empty() {
                    continue;
                }
                let first = seg.waiters.iter().filter_map(|w| w.deadline).min();
                next = [next, first, Some(seg.next_check)]
                    .into_iter()
                    .flatten()
                    .min();
                seg.waiting_on = Some(cur);
                words.push(Word::shared(wake_seq, cur));
            }
            if !use_waitv && words.len() > 1 {
                next = Some(next.map_or(now + FALLBACK_POLL, |n| n.min(now + FALLBACK_POLL)));
            }
            deadline = next;
            st.until = next;
        }
        for waker in wake.drain(..) {
            waker.wake();
        }
        if !relays.is_empty() {
            // Reader step 7 for the hub's own sleep: pass the wake-up on to other waiters of
            // each segment whose word changed. After this process's tasks are woken, not
            // before (as a reader relays before it reads): the tasks are the latency-critical
            // path here, the relay costs the others one system call of delay.
            let st = lock(&thread.state);
            for (key, v) in relays.drain(..) {
                if let Some(member) = st
                    .segments
                    .iter()
                    .find(|s| s.key == key)
                    .and_then(|s| s.words.first())
                {
                    // SAFETY: `addr` is one of the segment's words, used under the lock.
                    relay(unsafe { word(member.addr) }, v);
                }
            }
        }
        if use_waitv {
            waitv::wait(&words, deadline);
        } else {
            let left = deadline.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(Instant::now())
            });
            waitv::wait_private(&thread.ctl, words[0].expected, left);
        }
    }
}

/// How many hub threads this process runs, and how many segments they sleep on: what
/// [`crate::AsyncSubscriber::hub_census`] reports.
pub(crate) fn census() -> (usize, usize) {
    let threads = lock(HUB.get_or_init(Default::default));
    let segments = threads.iter().map(|t| lock(&t.state).segments.len()).sum();
    (threads.len(), segments)
}
