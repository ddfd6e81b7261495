//! A session's downlink queue: what its broker link hands it (replies, pushes, the broker's
//! verdicts), in order, at most `capacity` at a time, from the link's dispatch to the session's
//! task. Every session holds one for its whole life, so it is built for size: a mutex-guarded
//! deque (allocated at the first packet) and a `Notify`, about a hundred bytes where a tokio
//! channel costs about nine hundred (two cache-padded halves and a first block of 32 slots).
//! Full: the item is refused ([`TrySendError::Full`]) and the link cuts the session off as a
//! slow consumer. At its backlog mark the queue tells once, and again once the receiver has
//! caught up: what the edge tells the broker (PROTOCOL.md §16). Both tell under the queue's
//! lock, so the broker hears them in the order they happened. One sender (the link's slot for
//! the session) and one receiver (the session).

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio::sync::mpsc::error::TrySendError;

/// A deque this large is given back once drained (a burst is over).
const KEEP_CAPACITY: usize = 8;

struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Notify,
}

struct State<T> {
    queue: VecDeque<T>,
    capacity: usize,
    mark: usize,
    backlogged: bool,
    sender_gone: bool,
    receiver_gone: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock()
    }
}

/// A queue holding at most `capacity` items, backlogged at `mark`.
pub(crate) fn outbox<T>(capacity: usize, mark: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            capacity,
            mark,
            backlogged: false,
            sender_gone: false,
            receiver_gone: false,
        }),
        ready: Notify::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

/// The link's end.
pub(crate) struct Sender<T>(Arc<Shared<T>>);

impl<T> Sender<T> {
    /// Queues `item`, or gives it back: `Full` at capacity, `Closed` once the session is gone.
    /// When the queue reaches its mark, `tell` says so (without waiting); one that could not
    /// (false) is called again at the next item.
    pub(crate) fn try_send(
        &self,
        item: T,
        tell: impl FnOnce() -> bool,
    ) -> Result<(), TrySendError<T>> {
        {
            let mut state = self.0.lock();
            if state.receiver_gone {
                return Err(TrySendError::Closed(item));
            }
            if state.queue.len() >= state.capacity {
                return Err(TrySendError::Full(item));
            }
            state.queue.push_back(item);
            if !state.backlogged && state.queue.len() >= state.mark && tell() {
                state.backlogged = true;
            }
        }
        self.0.ready.notify_one();
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.lock().sender_gone = true;
        self.0.ready.notify_one();
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("outbox::Sender")
    }
}

/// The session's end.
pub(crate) struct Receiver<T>(Arc<Shared<T>>);

impl<T> Receiver<T> {
    /// The next item; `None` once the sender is gone and everything it queued was taken.
    /// Cancel-safe: an item is taken only when this returns it.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        loop {
            {
                let mut state = self.0.lock();
                if let Some(item) = take(&mut state) {
                    return Some(item);
                }
                if state.sender_gone {
                    return None;
                }
            }
            // A wake-up sent after the check above is kept as a permit, so none is lost.
            self.0.ready.notified().await;
        }
    }

    /// The next item if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        take(&mut self.0.lock())
    }

    /// When the queue, backlogged, is empty now, `tell` says so (without waiting): `None` when
    /// it is not, `Some(true)` once told, `Some(false)` when `tell` could not; then the queue
    /// stays backlogged (its mark is not told again) until [`Receiver::told`].
    pub(crate) fn caught_up(&mut self, tell: impl FnOnce() -> bool) -> Option<bool> {
        let mut state = self.0.lock();
        if !(state.backlogged && state.queue.is_empty()) {
            return None;
        }
        let told = tell();
        if told {
            state.backlogged = false;
        }
        Some(told)
    }

    /// The catching up was told another way.
    pub(crate) fn told(&mut self) {
        self.0.lock().backlogged = false;
    }
}

fn take<T>(state: &mut State<T>) -> Option<T> {
    let item = state.queue.pop_front();
    if state.queue.is_empty() && state.queue.capacity() > KEEP_CAPACITY {
        state.queue = VecDeque::new();
    }
    item
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        state.queue.clear();
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("outbox::Receiver")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn items_arrive_in_order_and_the_end_after_the_last() {
        let (tx, mut rx) = outbox(4, 4);
        for n in 1..=3 {
            tx.try_send(n, || true).unwrap();
        }
        drop(tx);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(
            rx.recv().await,
            None,
            "the sender is gone and nothing is left"
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_gone_session_is_closed() {
        let (tx, mut rx) = outbox(2, 2);
        tx.try_send(1, || true).unwrap();
        tx.try_send(2, || true).unwrap();
        assert!(matches!(
            tx.try_send(3, || true),
            Err(TrySendError::Full(3))
        ));
        assert_eq!(rx.recv().await, Some(1));
        tx.try_send(4, || true).unwrap();
        drop(rx);
        assert!(matches!(
            tx.try_send(5, || true),
            Err(TrySendError::Closed(5))
        ));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_and_a_dropped_wait_loses_nothing() {
        let (tx, mut rx) = outbox(4, 4);
        let waiting = tokio::time::timeout(Duration::from_millis(20), rx.recv()).await;
        assert!(waiting.is_err(), "nothing queued yet");
        let woken = tokio::spawn(async move { (rx.recv().await, rx) });
        tokio::task::yield_now().await;
        tx.try_send(7, || true).unwrap();
        let (item, mut rx) = woken.await.unwrap();
        assert_eq!(item, Some(7));
        tx.try_send(8, || true).unwrap();
        assert_eq!(rx.try_recv(), Some(8));
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn the_backlog_mark_is_told_once_and_so_is_the_catching_up() {
        let (tx, mut rx) = outbox(8, 3);
        let told = std::cell::Cell::new(0);
        let tell = || {
            told.set(told.get() + 1);
            true
        };
        tx.try_send(1, tell).unwrap();
        tx.try_send(2, tell).unwrap();
        assert_eq!(told.get(), 0);
        tx.try_send(3, tell).unwrap();
        tx.try_send(4, tell).unwrap();
        assert_eq!(told.get(), 1, "the mark is told once");
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.caught_up(|| true), None, "three still wait");
        while rx.try_recv().is_some() {}
        assert_eq!(rx.caught_up(|| false), Some(false), "no room to tell it");
        for n in 5..8 {
            tx.try_send(n, tell).unwrap();
        }
        assert_eq!(
            told.get(),
            1,
            "still backlogged: the mark is not told again"
        );
        while rx.try_recv().is_some() {}
        rx.told();
        assert_eq!(rx.caught_up(|| true), None, "told another way");
        for n in 0..3 {
            tx.try_send(n, || false).unwrap();
        }
        tx.try_send(9, tell).unwrap();
        assert_eq!(
            told.get(),
            2,
            "a mark that could not be told is told at the next item"
        );
    }

    #[test]
    fn a_drained_burst_gives_its_room_back() {
        let (tx, mut rx) = outbox(64, 64);
        for n in 0..64 {
            tx.try_send(n, || true).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert_eq!(rx.0.lock().queue.capacity(), 0);
    }
}
