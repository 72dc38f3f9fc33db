//! [`OnWake`]: a future polled only when something it waits for woke it.
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

use futures_util::task::{waker_ref, ArcWake, AtomicWaker};

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

/// `F`, polled only when its own waker fired since it was last polled (or after
/// [`OnWake::rearm`]).
pub(crate) struct OnWake<F> {
    fut: F,
    flag: Arc<Flag>,
}

impl<F> OnWake<F> {
    pub(crate) fn new(fut: F) -> Self {
        OnWake {
            fut,
            flag: Arc::new(Flag {
                woken: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
        }
    }

    /// The future itself, to replace it or ask something of it; [`OnWake::rearm`] after a
    /// change that needs it polled.
    pub(crate) fn inner(&mut self) -> &mut F {
        &mut self.fut
    }

    /// Polls it at the next poll, woken or not.
    pub(crate) fn rearm(&self) {
        self.flag.woken.store(true, Ordering::Release);
    }
}

impl<F: Future + Unpin> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = waker_ref(&this.flag);
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
