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
