//! The hand-off from a tunnel reader to the application thread reading a stream: a crossbeam
//! channel carries the frames, and a *bell* wakes the one thread that waits for them.
//!
//! Why not `Receiver::recv`: crossbeam's blocking receive spins and then calls `sched_yield`
//! before it parks. On one CPU (a process pinned with `taskset`, a container with one CPU)
//! that spinning only delays the reader thread the waiter needs, and each yield is a context
//! switch. Here a waiter on one CPU parks at once; with more, it looks a few times within a
//! microsecond first (data that streams in is often there by then, and a park costs two
//! context switches). It spins longer only for an answer (a read that follows a write on the
//! stream: request and response), and only while spinning keeps catching the answers
//! ([`Spin`]). An answer that comes within
//! microseconds is then caught on a CPU that never went idle, with no wake-up at all: waking
//! a sleeping thread on an idle CPU is what costs the most on virtual machines. The spin
//! yields now and then, so that a thread this CPU owes time to (perhaps the very tunnel
//! reader awaited) runs meanwhile.
//!
//! One thread waits at a time (the stream's receive lock serialises readers). Senders ring
//! the bell after each message and when they go away (disconnection wakes the waiter too).

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use parking_lot::Mutex;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};

/// A bell one thread waits on (parked with `std::thread::park`, as crossbeam's own receive
/// does: a wake-up is one futex call, no lock).
#[derive(Default)]
struct Bell {
    /// The thread waiting, set before `waiting`.
    waiter: Mutex<Option<Thread>>,
    /// A thread is (about to be) parked.
    waiting: AtomicBool,
}

impl Bell {
    /// Whether a thread waits (or is about to), asked right after publishing what it waits
    /// for.
    fn waited_on(&self) -> bool {
        // Pairs with the waiter's store of `waiting` before its last look at the channel:
        // either it sees the message, or this sees it waiting.
        fence(SeqCst);
        self.waiting.load(SeqCst)
    }

    /// Wake the waiter, if any. The caller has just published what it waits for.
    fn ring(&self) {
        if self.waited_on() {
            self.unpark();
        }
    }

    fn unpark(&self) {
        if let Some(t) = &*self.waiter.lock() {
            t.unpark();
        }
    }
}

/// Looks before parking when not spinning for an answer: the first `BRIEF_SPINS` after
/// 1, 2, 4, ... spin hints (127 in all, well under a microsecond), the rest after a yield.
const BRIEF_SPINS: u32 = 7;
const BRIEF_LOOKS: u32 = 11;

/// The sending half (one per stream, held by the session's table).
pub(crate) struct Tx<T> {
    tx: Option<Sender<T>>,
    bell: Arc<Bell>,
}

impl<T> Tx<T> {
    /// Send without blocking (the channel is unbounded; flow control bounds what is in it).
    /// Fails when the receiving half is gone.
    pub(crate) fn send(&self, m: T) -> Result<(), T> {
        let tx = self.tx.as_ref().expect("present until dropped");
        tx.send(m).map_err(|e| e.0)?;
        self.bell.ring();
        Ok(())
    }

    /// Send without waking the waiter yet: returns the [`Wake`] to do once the caller has
    /// released its locks (`None` if nobody waits). Woken inside a lock section, the waiter
    /// may run at once on this CPU and leave the lock held by a preempted thread, which the
    /// next tunnel reader then spins on.
    pub(crate) fn send_later(&self, m: T) -> Result<Option<Wake>, T> {
        let tx = self.tx.as_ref().expect("present until dropped");
        tx.send(m).map_err(|e| e.0)?;
        Ok(self.bell.waited_on().then(|| Wake(self.bell.clone())))
    }
}

/// A wake-up owed to a waiter (see [`Tx::send_later`]).
#[must_use = "the waiter sleeps until woken"]
pub(crate) struct Wake(Arc<Bell>);

impl Wake {
    pub(crate) fn wake(self) {
        self.0.unpark();
    }
}

impl<T> Drop for Tx<T> {
    fn drop(&mut self) {
        // Disconnect first, then wake the waiter so that it sees the disconnection.
        drop(self.tx.take());
        self.bell.ring();
    }
}

/// The receiving half (the stream's handle).
pub(crate) struct Rx<T> {
    rx: Receiver<T>,
    bell: Arc<Bell>,
    /// Shared by the session's streams: whether answers come fast is a property of the
    /// peer and the path, and a new stream should not pay a spin to learn it again.
    spin: Arc<Spin>,
}

/// A new hand-off channel, whose waits spin by `spin`'s record.
pub(crate) fn channel<T>(spin: Arc<Spin>) -> (Tx<T>, Rx<T>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let bell = Arc::new(Bell::default());
    (Tx { tx: Some(tx), bell: bell.clone() }, Rx { rx, bell, spin })
}

impl<T> Rx<T> {
    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        self.rx.try_recv()
    }

    /// Wait for the next message until `deadline` (for ever with `None`). `answer`: the
    /// message answers something this side just sent, so spinning for it may pay (see
    /// [`Spin`]); otherwise look a few times within a microsecond, then park (on one CPU,
    /// park at once).
    pub(crate) fn recv_deadline(
        &mut self,
        deadline: Option<Instant>,
        answer: bool,
    ) -> Result<T, RecvTimeoutError> {
        if let Some(got) = self.poll() {
            return got;
        }
        if answer && multi_cpu() && self.spin.should_spin() {
            let until = Instant::now() + Spin::LENGTH;
            let until = deadline.map_or(until, |d| d.min(until));
            let mut k = 0u32;
            loop {
                if let Some(got) = self.poll() {
                    if got.is_ok() {
                        self.spin.caught(true);
                    }
                    return got;
                }
                k += 1;
                if Instant::now() >= until {
                    break;
                }
                // Let a thread this CPU owes time run (perhaps the tunnel reader this waits
                // for); with none, the call returns at once and the CPU stays awake.
                if k % 4 == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            self.spin.caught(false);
        } else if multi_cpu() {
            // Data that streams in (a bulk reader) is often there a moment later: look a few
            // times, briefly, before parking, as crossbeam's receive does; a park and its
            // wake-up cost two context switches and a futex call each.
            for step in 0..BRIEF_LOOKS {
                if step < BRIEF_SPINS {
                    for _ in 0..1 << step {
                        std::hint::spin_loop();
                    }
                } else {
                    std::thread::yield_now();
                }
                if let Some(got) = self.poll() {
                    return got;
                }
            }
        }
        self.park(deadline)
    }

    /// The next message or the disconnection, if either is there (`None`: empty).
    fn poll(&self) -> Option<Result<T, RecvTimeoutError>> {
        match self.rx.try_recv() {
            Ok(m) => Some(Ok(m)),
            Err(TryRecvError::Disconnected) => Some(Err(RecvTimeoutError::Disconnected)),
            Err(TryRecvError::Empty) => None,
        }
    }

    /// The next message, or why there is none.
    fn take(&self) -> Result<T, RecvTimeoutError> {
        self.poll().unwrap_or(Err(RecvTimeoutError::Timeout))
    }

    fn park(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        let bell = &*self.bell;
        {
            let me = std::thread::current();
            let mut w = bell.waiter.lock();
            if w.as_ref().map(Thread::id) != Some(me.id()) {
                *w = Some(me);
            }
        }
        bell.waiting.store(true, SeqCst);
        // Park until a message, the disconnection or the deadline; wake-ups without either
        // (a stale unpark token) just look again.
        let got = loop {
            if let Some(got) = self.poll() {
                break got;
            }
            match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break self.take();
                    }
                    std::thread::park_timeout(d - now);
                }
                None => std::thread::park(),
            }
        };
        bell.waiting.store(false, SeqCst);
        got
    }
}

/// Whether a waiter for an answer spins before it parks, like an adaptive mutex: it spins
/// (for [`Spin::LENGTH`] at most) while spinning catches the answers; each spin that does not
/// doubles the number of waits that park at once before the next try (up to 1023), so a
/// session whose answers take long (a slow server, a long path) costs almost no CPU, and one
/// that turns fast again is noticed. One record per session, shared by its streams (relaxed
/// atomics: a lost update only shifts when the next try comes). The caller also never spins
/// on one CPU.
#[derive(Default)]
pub(crate) struct Spin {
    /// Consecutive spins that missed (the backoff exponent).
    misses: AtomicU32,
    /// Waits left that park without trying.
    skip: AtomicU32,
}

impl Spin {
    /// Longest spin: a few loopback round trips.
    pub(crate) const LENGTH: Duration = Duration::from_micros(50);
    const MAX_MISSES: u32 = 10;

    /// Whether this wait should spin first.
    pub(crate) fn should_spin(&self) -> bool {
        self.skip.fetch_update(Relaxed, Relaxed, |s| s.checked_sub(1)).is_err()
    }

    /// The spin caught the message (`true`) or ran out (`false`).
    pub(crate) fn caught(&self, caught: bool) {
        if caught {
            self.misses.store(0, Relaxed);
        } else {
            let misses = (self.misses.load(Relaxed) + 1).min(Self::MAX_MISSES);
            self.misses.store(misses, Relaxed);
            self.skip.store((1 << misses) - 1, Relaxed);
        }
    }
}

/// Whether this thread may run on more than one CPU (cached per thread: affinity is set on
/// a process or thread before it starts waiting, by `taskset` or a container).
fn multi_cpu() -> bool {
    thread_local! {
        static MULTI: bool = crate::ffi::sys::cpus_allowed() > 1;
    }
    MULTI.with(|m| *m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    const LONG: Duration = Duration::from_secs(10);

    fn soon() -> Option<Instant> {
        Some(Instant::now() + LONG)
    }

    #[test]
    fn a_parked_waiter_is_woken_by_a_send() {
        let (tx, mut rx) = channel::<u32>(Arc::default());
        let h = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            tx.send(7).unwrap();
            tx
        });
        assert_eq!(rx.recv_deadline(soon(), true), Ok(7));
        drop(h.join().unwrap());
        assert_eq!(rx.recv_deadline(soon(), true), Err(RecvTimeoutError::Disconnected));
    }

    #[test]
    fn dropping_the_sender_wakes_the_waiter() {
        let (tx, mut rx) = channel::<u32>(Arc::default());
        let t = Instant::now();
        let h = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            drop(tx);
        });
        assert_eq!(rx.recv_deadline(None, true), Err(RecvTimeoutError::Disconnected));
        assert!(t.elapsed() < LONG);
        h.join().unwrap();
    }

    #[test]
    fn a_deadline_ends_the_wait() {
        let (_tx, mut rx) = channel::<u32>(Arc::default());
        let t = Instant::now();
        let r = rx.recv_deadline(Some(t + Duration::from_millis(30)), true);
        assert_eq!(r, Err(RecvTimeoutError::Timeout));
        assert!(t.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn a_deferred_wake_reaches_the_waiter() {
        let (tx, mut rx) = channel::<u32>(Arc::default());
        let h = thread::spawn(move || {
            // Wait until the receiver parks, then send with a deferred wake-up.
            while !tx.bell.waiting.load(SeqCst) {
                thread::yield_now();
            }
            let wake = tx.send_later(3).unwrap();
            wake.expect("the receiver waits").wake();
            tx
        });
        let mut none = Rx { rx: rx.rx.clone(), bell: rx.bell.clone(), spin: Arc::default() };
        assert_eq!(none.recv_deadline(soon(), false), Ok(3));
        drop(h.join().unwrap());
        assert_eq!(rx.recv_deadline(soon(), true), Err(RecvTimeoutError::Disconnected));
    }

    #[test]
    fn no_wake_up_is_lost_in_a_long_ping_pong() {
        // Two threads bounce a counter through two hand-offs; a lost wake-up hangs one of
        // them, which the deadline turns into a failure.
        let (atx, mut arx) = channel::<u32>(Arc::default());
        let (btx, mut brx) = channel::<u32>(Arc::default());
        let n = 20_000;
        let h = thread::spawn(move || {
            for _ in 0..n {
                let v = arx.recv_deadline(soon(), true).expect("ping");
                btx.send(v + 1).unwrap();
            }
        });
        let mut v = 0;
        for _ in 0..n {
            atx.send(v).unwrap();
            v = brx.recv_deadline(soon(), true).expect("pong");
        }
        assert_eq!(v, n);
        h.join().unwrap();
    }

    #[test]
    fn spinning_backs_off_while_it_misses() {
        let s = Spin::default();
        assert!(s.should_spin());
        s.caught(true);
        assert!(s.should_spin());
        // Each miss doubles the waits that park at once.
        let mut pattern = Vec::new();
        for _ in 0..3 {
            s.caught(false);
            let mut parked = 0;
            while !s.should_spin() {
                parked += 1;
            }
            pattern.push(parked);
        }
        assert_eq!(pattern, vec![1, 3, 7]);
        for _ in 0..20 {
            s.caught(false);
        }
        let mut parked = 0;
        while !s.should_spin() {
            parked += 1;
        }
        assert_eq!(parked, 1023);
        // One catch and it spins every time again.
        s.caught(true);
        assert!(s.should_spin() && s.should_spin());
    }
}
