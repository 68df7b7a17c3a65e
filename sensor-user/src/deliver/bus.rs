//! Fan-out from the pipeline to subscribers (gRPC streams), one bounded queue each.
//!
//! [`Bus::publish`] never waits: it takes each subscriber's queue lock for a push and moves on.
//! When a queue is full the item is not queued for that subscriber; the subscriber is told, in
//! order, how many it missed and their sequence numbers ([`Delivery::Missed`]), so it can resume
//! from the spool (`since_seq`) where there is one.
//!
//! Sequence number 0 means unnumbered (an alert the spool could not take): such items are
//! delivered like the others, but they never move the published position, and a notice counts
//! them apart ([`Delivery::Missed::unnumbered`]) since no spool can give them back.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::Notify;

/// Items that carry their position in the stream.
pub trait Sequenced {
    fn seq(&self) -> u64;
}

impl<T: Sequenced> Sequenced for Arc<T> {
    fn seq(&self) -> u64 {
        (**self).seq()
    }
}

impl Sequenced for sensor_proto::Event {
    fn seq(&self) -> u64 {
        self.seq
    }
}

impl Sequenced for sensor_proto::Alert {
    fn seq(&self) -> u64 {
        self.seq
    }
}

/// What a subscriber receives.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery<T> {
    Item(T),
    /// Items dropped because the queue was full, in place of where they would have been.
    Missed {
        count: u64,
        /// The numbered items missed: `first_seq..=last_seq` (both 0 when there were none).
        first_seq: u64,
        last_seq: u64,
        /// How many of `count` were unnumbered.
        unnumbered: u64,
    },
}

type Filter<T> = Box<dyn Fn(&T) -> bool + Send + Sync>;

#[derive(Default)]
struct Gap {
    count: u64,
    first_seq: u64,
    last_seq: u64,
    unnumbered: u64,
}

impl Gap {
    fn add(&mut self, seq: u64) {
        self.count += 1;
        if seq == 0 {
            self.unnumbered += 1;
            return;
        }
        if self.first_seq == 0 {
            self.first_seq = seq;
        }
        self.last_seq = seq;
    }
}

struct Queue<T> {
    items: VecDeque<Delivery<T>>,
    /// Items dropped since the last one queued; reported before the next one.
    gap: Option<Gap>,
}

/// Who subscribed: shown in health and metrics (`name`), and the client whose limits the
/// subscription counts against (one process, one address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub client: String,
}

impl From<&str> for Peer {
    fn from(name: &str) -> Self {
        Peer {
            name: name.to_string(),
            client: name.to_string(),
        }
    }
}

struct Subscriber<T> {
    id: u64,
    peer: Peer,
    capacity: usize,
    filter: Filter<T>,
    queue: Mutex<Queue<T>>,
    notify: Notify,
    missed: AtomicU64,
    /// The newest sequence number handed to the subscriber.
    received_seq: AtomicU64,
}

/// Point-in-time view of a subscriber, for health and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriberInfo {
    pub id: u64,
    pub peer: String,
    pub client: String,
    pub depth: usize,
    pub capacity: usize,
    pub missed: u64,
    /// Published minus received, in sequence numbers: how far behind the subscriber is.
    pub lag: u64,
}

pub struct Bus<T> {
    subscribers: Mutex<Vec<Arc<Subscriber<T>>>>,
    next_id: AtomicU64,
    last_published: AtomicU64,
    capacity: usize,
}

impl<T: Clone + Sequenced> Bus<T> {
    /// A bus whose subscribers each queue up to `capacity` items.
    pub fn new(capacity: usize) -> Arc<Bus<T>> {
        Arc::new(Bus {
            subscribers: Mutex::default(),
            next_id: AtomicU64::new(1),
            last_published: AtomicU64::new(0),
            capacity: capacity.max(1),
        })
    }

    /// Hands `item` to every subscriber whose filter accepts it. Never blocks on a subscriber.
    pub fn publish(&self, item: &T) {
        self.last_published.fetch_max(item.seq(), Ordering::Relaxed);
        let subscribers = self.subscribers.lock().unwrap();
        for sub in subscribers.iter() {
            if !(sub.filter)(item) {
                continue;
            }
            let mut q = sub.queue.lock().unwrap();
            if q.items.len() >= sub.capacity {
                q.gap.get_or_insert_default().add(item.seq());
                sub.missed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Some(gap) = q.gap.take() {
                q.items.push_back(missed(gap));
            }
            q.items.push_back(Delivery::Item(item.clone()));
            drop(q);
            sub.notify.notify_one();
        }
    }

    /// A new subscriber `peer` receiving the items `filter` accepts from now on.
    pub fn subscribe(
        self: &Arc<Self>,
        peer: impl Into<Peer>,
        filter: impl Fn(&T) -> bool + Send + Sync + 'static,
    ) -> Subscription<T> {
        let sub = Arc::new(Subscriber {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            peer: peer.into(),
            capacity: self.capacity,
            filter: Box::new(filter),
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                gap: None,
            }),
            notify: Notify::new(),
            missed: AtomicU64::new(0),
            received_seq: AtomicU64::new(self.last_published.load(Ordering::Relaxed)),
        });
        self.subscribers.lock().unwrap().push(sub.clone());
        Subscription {
            sub,
            bus: Arc::downgrade(self),
        }
    }

    /// Whether anyone listens (publishing to nobody can skip building the item).
    pub fn has_subscribers(&self) -> bool {
        !self.subscribers.lock().unwrap().is_empty()
    }

    pub fn subscribers(&self) -> Vec<SubscriberInfo> {
        let last = self.last_published.load(Ordering::Relaxed);
        self.subscribers
            .lock()
            .unwrap()
            .iter()
            .map(|s| SubscriberInfo {
                id: s.id,
                peer: s.peer.name.clone(),
                client: s.peer.client.clone(),
                depth: s.queue.lock().unwrap().items.len(),
                capacity: s.capacity,
                missed: s.missed.load(Ordering::Relaxed),
                lag: last.saturating_sub(s.received_seq.load(Ordering::Relaxed)),
            })
            .collect()
    }
}

fn missed<T>(gap: Gap) -> Delivery<T> {
    Delivery::Missed {
        count: gap.count,
        first_seq: gap.first_seq,
        last_seq: gap.last_seq,
        unnumbered: gap.unnumbered,
    }
}

/// One subscriber's end; dropping it unsubscribes.
pub struct Subscription<T> {
    sub: Arc<Subscriber<T>>,
    bus: Weak<Bus<T>>,
}

impl<T: Clone + Sequenced> Subscription<T> {
    /// The next item, or a notice of missed ones; waits while there is nothing.
    pub async fn recv(&mut self) -> Delivery<T> {
        let sub = self.sub.clone();
        loop {
            let notified = sub.notify.notified();
            if let Some(d) = self.try_recv() {
                return d;
            }
            notified.await;
        }
    }

    /// The next item or notice, if one is waiting.
    pub fn try_recv(&mut self) -> Option<Delivery<T>> {
        let mut q = self.sub.queue.lock().unwrap();
        let d = match q.items.pop_front() {
            Some(d) => d,
            // The queue drained after an overflow with nothing newer queued: report it now
            // rather than at the next item, which may be long in coming.
            None => missed(q.gap.take()?),
        };
        let seq = match &d {
            Delivery::Item(item) => item.seq(),
            Delivery::Missed { last_seq, .. } => *last_seq,
        };
        self.sub.received_seq.fetch_max(seq, Ordering::Relaxed);
        Some(d)
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            bus.subscribers
                .lock()
                .unwrap()
                .retain(|s| !Arc::ptr_eq(s, &self.sub));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct N(u64);
    impl Sequenced for N {
        fn seq(&self) -> u64 {
            self.0
        }
    }

    fn drain(sub: &mut Subscription<N>) -> Vec<Delivery<N>> {
        std::iter::from_fn(|| sub.try_recv()).collect()
    }

    #[test]
    fn a_slow_subscriber_is_told_what_it_missed_in_order() {
        let bus = Bus::new(3);
        let mut slow = bus.subscribe("slow", |_| true);
        let mut fast = bus.subscribe("fast", |_| true);
        for i in 1..=5 {
            bus.publish(&N(i));
            assert_eq!(fast.try_recv(), Some(Delivery::Item(N(i))));
        }
        assert_eq!(bus.subscribers()[0].depth, 3);
        assert_eq!(bus.subscribers()[0].lag, 5);
        assert_eq!(bus.subscribers()[1].lag, 0);
        // Room again: the notice comes before the next item, after the queued ones.
        assert_eq!(slow.try_recv(), Some(Delivery::Item(N(1))));
        bus.publish(&N(6));
        assert_eq!(
            drain(&mut slow),
            vec![
                Delivery::Item(N(2)),
                Delivery::Item(N(3)),
                Delivery::Missed {
                    count: 2,
                    first_seq: 4,
                    last_seq: 5,
                    unnumbered: 0,
                },
                Delivery::Item(N(6)),
            ]
        );
        assert_eq!(bus.subscribers()[0].missed, 2);
    }

    #[test]
    fn a_gap_is_reported_once_the_queue_drains_without_new_items() {
        let bus = Bus::new(1);
        let mut sub = bus.subscribe("s", |_| true);
        for i in 1..=4 {
            bus.publish(&N(i));
        }
        assert_eq!(
            drain(&mut sub),
            vec![
                Delivery::Item(N(1)),
                Delivery::Missed {
                    count: 3,
                    first_seq: 2,
                    last_seq: 4,
                    unnumbered: 0,
                }
            ]
        );
    }

    #[test]
    fn unnumbered_items_are_delivered_and_missed_apart_from_the_numbered_ones() {
        let bus = Bus::new(1);
        let mut sub = bus.subscribe("s", |_| true);
        for i in [1, 0, 2, 0] {
            bus.publish(&N(i));
        }
        assert_eq!(bus.subscribers()[0].lag, 2, "0 does not move the position");
        assert_eq!(
            drain(&mut sub),
            vec![
                Delivery::Item(N(1)),
                Delivery::Missed {
                    count: 3,
                    first_seq: 2,
                    last_seq: 2,
                    unnumbered: 2,
                }
            ]
        );
        bus.publish(&N(0));
        assert_eq!(drain(&mut sub), vec![Delivery::Item(N(0))]);
        assert_eq!(bus.subscribers()[0].lag, 0);
    }

    #[test]
    fn filters_apply_before_queueing_and_drop_unsubscribes() {
        let bus = Bus::new(2);
        let mut even = bus.subscribe("even", |n: &N| n.0.is_multiple_of(2));
        for i in 1..=4 {
            bus.publish(&N(i));
        }
        assert_eq!(
            drain(&mut even),
            vec![Delivery::Item(N(2)), Delivery::Item(N(4))]
        );
        drop(even);
        assert!(bus.subscribers().is_empty());
        bus.publish(&N(5));
    }

    #[tokio::test]
    async fn recv_wakes_on_publish() {
        let bus = Bus::new(4);
        let mut sub = bus.subscribe("s", |_| true);
        let producer = bus.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            producer.publish(&N(7));
        });
        assert_eq!(sub.recv().await, Delivery::Item(N(7)));
        task.await.unwrap();
    }
}
