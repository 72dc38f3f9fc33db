//! [`OnWake`]: a future polled only when something it waits for woke it; [`Gate`], the same
//! for the read side of a socket.
//!
//! A connection's task waits on several things at once (its stream, its timers, shutdown,
//! a refusal, new snapshots) with `tokio::select!`, which polls every one of them at every
//! wake-up; the task wakes two or three times a request, nearly always for its stream, and
//! polling the others each time (each a lock or a registration to check) cost more than
//! the request's own wake-ups. Wrapped in [`OnWake`], a branch is polled only after its
//! own waker fired (and once at the start), and is otherwise a flag to read.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::{waker_ref, ArcWake, AtomicWaker, WakerRef};

/// What the wrapped future is given as its waker: notes the wake, then wakes the task.
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl ArcWake for Flag {
    fn wake_by_ref(me: &Arc<Self>) {
        me.woken.store(true, Ordering::Release);
        me.task.wake();
    }
}

/// Whether something that waits with its own waker should be polled: only once that
/// waker fired since it was last polled (or after [`Gate::rearm`]).
///
/// [`crate::tunnel_tls::ServerTls`] reads its socket through one. A connection's task wakes
/// several times a request (hyper's and h2's hand-offs), and at each wake hyper or h2 tries
/// to read the client's socket again: about four tries a request, one of which finds
/// bytes. A try that finds none costs tokio's readiness check and registration (a lock and
/// a budget check) plus a buffer borrowed and given back; behind a gate it is a flag read.
/// It relies on what tokio guarantees a reader: a read that returned `Pending` has its
/// waker woken when the socket becomes readable (or when the task's budget ran out, which
/// wakes it too), and not before, so until then another try would return `Pending` again.
pub(crate) struct Gate {
    flag: Arc<Flag>,
}

impl Gate {
    /// An open gate: the first poll goes through.
    pub(crate) fn new() -> Gate {
        Gate {
            flag: Arc::new(Flag {
                woken: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
        }
    }

    /// Registers the task's waker (woken when the gate's waker is), and says whether to
    /// poll: whether the gate's waker fired since the last poll, or it was rearmed. Poll
    /// with [`Gate::waker`] then, and [`Gate::rearm`] if that poll was not `Pending`.
    pub(crate) fn open(&self, cx: &Context<'_>) -> bool {
        self.flag.task.register(cx.waker());
        self.flag.woken.swap(false, Ordering::AcqRel)
    }

    /// The waker to poll with.
    pub(crate) fn waker(&self) -> WakerRef<'_> {
        waker_ref(&self.flag)
    }

    /// Lets the next poll through, woken or not.
    pub(crate) fn rearm(&self) {
        self.flag.woken.store(true, Ordering::Release);
    }
}

/// `F`, polled only when its own waker fired since it was last polled (or after
/// [`OnWake::rearm`]).
pub(crate) struct OnWake<F> {
    fut: F,
    gate: Gate,
}

impl<F> OnWake<F> {
    pub(crate) fn new(fut: F) -> Self {
        OnWake {
            fut,
            gate: Gate::new(),
        }
    }

    /// The future itself, to replace it or ask something of it; [`OnWake::rearm`] after a
    /// change that needs it polled.
    pub(crate) fn inner(&mut self) -> &mut F {
        &mut self.fut
    }

    /// Polls it at the next poll, woken or not.
    pub(crate) fn rearm(&self) {
        self.gate.rearm();
    }
}

impl<F: Future + Unpin> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if !this.gate.open(cx) {
            return Poll::Pending;
        }
        let waker = this.gate.waker();
        Pin::new(&mut this.fut).poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    use std::task::Waker;

    /// Counts its polls, keeps the waker it was given, ends when `ready` is set.
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    struct Polled<'a>(&'a Probe);

    impl Future for Polled<'_> {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let p = self.0;
            p.polls.fetch_add(1, Ordering::SeqCst);
            *p.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            if p.ready.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    /// The task's waker: counts its wakes.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl ArcWake for Task {
        fn wake_by_ref(me: &Arc<Self>) {
            me.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn wake_inner(p: &Probe) {
        let w = p.waker.lock().unwrap_or_else(|e| e.into_inner()).clone();
        w.expect("the inner future was polled").wake();
    }

    #[test]
    fn a_gate_opens_once_its_waker_fired_or_it_was_rearmed() {
        let task = Arc::new(Task::default());
        let waker = waker_ref(&task);
        let cx = Context::from_waker(&waker);
        let gate = Gate::new();
        // Open at first; a poll through it found nothing (it left the gate's waker).
        assert!(gate.open(&cx));
        let registered = gate.waker().clone();
        // The task woke for something else: closed, however often it asks.
        assert!(!gate.open(&cx));
        assert!(!gate.open(&cx));
        // The gate's waker fires: the task is woken and the gate opens, once.
        registered.wake_by_ref();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(gate.open(&cx));
        assert!(!gate.open(&cx));
        // Rearmed (the poll found bytes, and there may be more): open without a wake.
        gate.rearm();
        assert!(gate.open(&cx));
        // A wake reaches the task that asked last.
        let other = Arc::new(Task::default());
        let other_waker = waker_ref(&other);
        assert!(!gate.open(&Context::from_waker(&other_waker)));
        registered.wake_by_ref();
        assert_eq!(other.0.load(Ordering::SeqCst), 1);
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn polls_the_inner_future_only_when_its_own_waker_fired_or_it_was_rearmed() {
        let probe = Probe::default();
        let task = Arc::new(Task::default());
        let waker = waker_ref(&task);
        let mut cx = Context::from_waker(&waker);
        let mut f = OnWake::new(Polled(&probe));
        let polls = || probe.polls.load(Ordering::SeqCst);

        // The first poll reaches it, so that it can register.
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        assert_eq!(polls(), 1);
        // The task woke for something else: not polled.
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        assert_eq!(polls(), 1);
        // Its own waker fires: the task is woken, and the next poll reaches it.
        wake_inner(&probe);
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        assert_eq!(polls(), 2);
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        assert_eq!(polls(), 2);
        // Rearmed (the future was replaced): polled once more without a wake.
        f.rearm();
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        assert_eq!(polls(), 3);
        // Its output comes through.
        probe.ready.store(true, Ordering::SeqCst);
        wake_inner(&probe);
        assert!(Pin::new(&mut f).poll(&mut cx).is_ready());
        assert_eq!(polls(), 4);
    }
}
