//! Polls a side future (a shutdown signal, a timer) only when it asked to be polled, not
//! every time the task that holds it wakes.
//!
//! A client connection's task waits on its connection and, beside it, on what may end it:
//! the shutdown watch, the idle timer, a retire notification. Polled as branches of one
//! `select!`, those were polled on every wake of the task, i.e. several times per request, and
//! each poll of a waiting `Notify` takes the lock of its waiter list (the shutdown watch's is
//! shared by every connection). Behind a [`WakeGate`] they are polled once to register, and
//! again only after one of them woke.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Gates the polls of one side future (see the module docs).
pub(super) struct WakeGate {
    flag: Arc<Flag>,
    /// `flag` as a [`Waker`]: what the side future registers.
    waker: Waker,
}

/// Set by the side future's wakes; forwards them to the task that holds the gate.
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl WakeGate {
    pub(super) fn new() -> Self {
        let flag = Arc::new(Flag {
            // The first poll goes through: the side future registers its wakers then.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        WakeGate {
            waker: Waker::from(Arc::clone(&flag)),
            flag,
        }
    }

    /// Polls `future` if it woke since its last poll (or was never polled); else `Pending`,
    /// and its next wake wakes the task of `cx`.
    pub(super) fn poll<F: Future>(
        &self,
        future: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        // Registered before the flag is read: a wake after the read reaches this task.
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        future.poll(&mut Context::from_waker(&self.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::Notify;

    use super::*;

    #[tokio::test]
    async fn the_side_future_is_polled_only_after_it_woke() {
        let notify = Arc::new(Notify::new());
        let polls = AtomicUsize::new(0);
        let side = async {
            polls.fetch_add(1, Ordering::SeqCst);
            notify.notified().await;
            polls.fetch_add(1, Ordering::SeqCst);
        };
        let mut side = std::pin::pin!(side);
        let gate = WakeGate::new();
        let mut task = Context::from_waker(Waker::noop());

        assert!(gate.poll(side.as_mut(), &mut task).is_pending());
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "the first poll registers it"
        );
        for _ in 0..3 {
            // The task woke for something else: the side future is not polled.
            assert!(gate.poll(side.as_mut(), &mut task).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);

        notify.notify_one();
        assert!(gate.poll(side.as_mut(), &mut task).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_wake_of_the_side_future_wakes_the_task() {
        let notify = Arc::new(Notify::new());
        let side = notify.notified();
        let mut side = std::pin::pin!(side);
        let gate = WakeGate::new();
        let woken = Arc::new(Counter::default());
        let task_waker = Waker::from(Arc::clone(&woken));
        let mut task = Context::from_waker(&task_waker);

        assert!(gate.poll(side.as_mut(), &mut task).is_pending());
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);
        notify.notify_waiters();
        assert_eq!(woken.0.load(Ordering::SeqCst), 1, "the task is told");
        assert!(gate.poll(side.as_mut(), &mut task).is_ready());
    }

    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}
