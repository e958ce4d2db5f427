//! The durable side of the engine through its public API: the journal
//! hook reports every change a write-ahead log must record, in an order a
//! replay can trust (a message is reported ready before anyone can see it
//! there); two-phase publish keeps a message invisible until committed;
//! restore rebuilds queues, messages (ids, attempts, dead-letter origin,
//! delays) and the id marks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ubroker_engine::{
    Broker, Config, Error, Journal, ManualClock, NewMessage, QueueName, QueueUpdate,
    MESSAGE_OVERHEAD,
};

const TTL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Ready(String, u64, u32, bool),
    Delayed(String, u64, u32, Duration),
    Delivered(u64, u32),
    Gone(u64),
}

/// Records every report, and whether the message was already fetchable
/// when it was reported ready (it must not be).
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
    broker: Mutex<Option<std::sync::Weak<Broker<ManualClock>>>>,
    visible_too_early: Mutex<Vec<u64>>,
}

impl Journal for Recorder {
    fn ready(&self, queue: &QueueName, id: u64, attempts: u32, dead_lettered: bool) {
        // Peek: the message must not be fetchable yet. A peek that finds a
        // ready message leases it, so only look when the queue is expected
        // to be empty apart from it (the tests arrange that).
        if let Some(broker) = self
            .broker
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|b| b.upgrade())
        {
            if let Ok(info) = broker.queue(queue.as_str()).info() {
                if info.ready > 0 {
                    self.visible_too_early.lock().unwrap().push(id);
                }
            }
        }
        self.events.lock().unwrap().push(Event::Ready(
            queue.as_str().to_owned(),
            id,
            attempts,
            dead_lettered,
        ));
    }

    fn delayed(&self, queue: &QueueName, id: u64, attempts: u32, delay: Duration) {
        self.events.lock().unwrap().push(Event::Delayed(
            queue.as_str().to_owned(),
            id,
            attempts,
            delay,
        ));
    }

    fn delivered(&self, id: u64, attempts: u32) {
        self.events
            .lock()
            .unwrap()
            .push(Event::Delivered(id, attempts));
    }

    fn gone(&self, id: u64) {
        self.events.lock().unwrap().push(Event::Gone(id));
    }
}

fn journaled() -> (Arc<Broker<ManualClock>>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let broker = Arc::new(
        Broker::with_clock(
            Config {
                ttl: TTL,
                ..Config::default()
            },
            ManualClock::new(),
        )
        .with_journal(recorder.clone()),
    );
    *recorder.broker.lock().unwrap() = Some(Arc::downgrade(&broker));
    (broker, recorder)
}

fn take(recorder: &Recorder) -> Vec<Event> {
    std::mem::take(&mut *recorder.events.lock().unwrap())
}

fn one(body: &str) -> Vec<NewMessage> {
    vec![NewMessage {
        body: Bytes::from(body.to_owned()),
        delay: Duration::ZERO,
    }]
}

#[test]
fn every_change_is_reported_and_ready_before_it_is_visible() {
    let (broker, recorder) = journaled();
    broker
        .queue("jobs")
        .put(QueueUpdate {
            max_deliveries: Some(2),
            ..QueueUpdate::default()
        })
        .unwrap();
    let id = broker
        .commit_publish(broker.prepare_publish("jobs", one("a")).unwrap())
        .unwrap()
        .start;
    assert!(
        take(&recorder).is_empty(),
        "publishes are the caller's to log"
    );

    let d1 = broker.queue("jobs").try_fetch().unwrap().unwrap();
    broker.queue("jobs").requeue(d1.id).unwrap();
    let d2 = broker.queue("jobs").try_fetch().unwrap().unwrap();
    // The second delivery's expiry is its last: a dead-letter move.
    broker.clock().advance(TTL);
    broker.expire_due();
    assert_eq!(
        take(&recorder),
        vec![
            Event::Delivered(id, 1),
            Event::Ready("jobs".into(), id, 1, false),
            Event::Delivered(id, 2),
            Event::Ready("jobs.dead".into(), id, 0, true),
        ]
    );
    assert_eq!(d2.attempt, 2);

    assert_eq!(broker.queue("jobs.dead").redrive().unwrap().moved, 1);
    let d3 = broker.queue("jobs").try_fetch().unwrap().unwrap();
    broker
        .queue("jobs")
        .requeue_after(d3.id, Duration::from_secs(3))
        .unwrap();
    broker.clock().advance(Duration::from_secs(3));
    broker.expire_due();
    let d4 = broker.queue("jobs").try_fetch().unwrap().unwrap();
    broker.queue("jobs").acknowledge(d4.id).unwrap();
    assert_eq!(
        take(&recorder),
        vec![
            Event::Ready("jobs".into(), id, 0, false),
            Event::Delivered(id, 1),
            Event::Delayed("jobs".into(), id, 1, Duration::from_secs(3)),
            Event::Ready("jobs".into(), id, 1, false),
            Event::Delivered(id, 2),
            Event::Gone(id),
        ]
    );
    assert!(recorder.visible_too_early.lock().unwrap().is_empty());
}

#[test]
fn an_expiry_reports_the_message_ready_again() {
    let (broker, recorder) = journaled();
    let id = broker
        .commit_publish(broker.prepare_publish("q", one("a")).unwrap())
        .unwrap()
        .start;
    broker.queue("q").try_fetch().unwrap().unwrap();
    broker.clock().advance(TTL);
    assert_eq!(broker.expire_due().expired, 1);
    assert_eq!(
        take(&recorder),
        vec![
            Event::Delivered(id, 1),
            Event::Ready("q".into(), id, 1, false),
        ]
    );
    assert!(recorder.visible_too_early.lock().unwrap().is_empty());
}

#[test]
fn batches_and_deletes_report_every_message() {
    let (broker, recorder) = journaled();
    let entries: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|b| NewMessage {
            body: Bytes::from_static(b.as_bytes()),
            delay: Duration::ZERO,
        })
        .collect();
    let ids = broker
        .commit_publish(broker.prepare_publish("q", entries).unwrap())
        .unwrap();
    let out = broker.queue("q").try_fetch_batch(3, usize::MAX).unwrap();
    let leased: Vec<u64> = out.iter().map(|d| d.id).collect();
    broker.queue("q").acknowledge_batch(&leased[..1]).unwrap();
    broker
        .queue("q")
        .requeue_batch(&leased[1..2], Duration::ZERO)
        .unwrap();
    let events = take(&recorder);
    assert_eq!(
        events,
        vec![
            Event::Delivered(ids.start, 1),
            Event::Delivered(ids.start + 1, 1),
            Event::Delivered(ids.start + 2, 1),
            Event::Gone(ids.start),
            Event::Ready("q".into(), ids.start + 1, 1, false),
        ]
    );
    // Left: one leased (id+2), two ready (id+3, id+1). A delete reports
    // each of them gone.
    assert_eq!(broker.queue("q").delete().unwrap().messages, 3);
    let mut gone: Vec<u64> = take(&recorder)
        .into_iter()
        .map(|e| match e {
            Event::Gone(id) => id,
            other => panic!("{other:?}"),
        })
        .collect();
    gone.sort_unstable();
    assert_eq!(gone, vec![ids.start + 1, ids.start + 2, ids.start + 3]);
}

#[test]
fn a_prepared_publish_is_invisible_until_committed_and_an_abort_gives_its_charge_back() {
    let broker = Broker::with_clock(
        Config {
            max_queue_bytes: 2 * (MESSAGE_OVERHEAD + 1),
            ..Config::default()
        },
        ManualClock::new(),
    );
    let prepared = broker.prepare_publish("q", one("a")).unwrap();
    assert_eq!(broker.queue("q").try_fetch().unwrap(), None);
    assert_eq!(broker.stats().queued_bytes, MESSAGE_OVERHEAD + 1);
    let second = broker.prepare_publish("q", one("b")).unwrap();
    assert_eq!(
        broker.prepare_publish("q", one("c")).unwrap_err(),
        Error::QueueFull
    );
    broker.abort_publish(second);
    assert_eq!(broker.stats().queued_bytes, MESSAGE_OVERHEAD + 1);
    let id = prepared.ids().start;
    broker.commit_publish(prepared).unwrap();
    let delivery = broker.queue("q").try_fetch().unwrap().unwrap();
    assert_eq!((delivery.message_id, &delivery.body[..]), (id, &b"a"[..]));
}

#[test]
fn restore_rebuilds_queues_messages_and_id_marks() {
    let broker = Broker::with_clock(
        Config {
            ttl: TTL,
            max_queues: 0,
            ..Config::default()
        },
        ManualClock::new(),
    );
    broker
        .restore_queue(
            "jobs",
            QueueUpdate {
                ttl: Some(Duration::from_secs(3)),
                max_deliveries: Some(4),
            },
        )
        .unwrap();
    broker
        .restore_message(
            "jobs",
            40,
            Bytes::from_static(b"x"),
            2,
            false,
            Duration::ZERO,
        )
        .unwrap();
    broker
        .restore_message(
            "jobs.dead",
            41,
            Bytes::from_static(b"y"),
            0,
            true,
            Duration::ZERO,
        )
        .unwrap();
    broker
        .restore_message(
            "jobs",
            42,
            Bytes::from_static(b"z"),
            0,
            false,
            Duration::from_secs(5),
        )
        .unwrap();
    broker.restore_ids(1 << 40, 100);
    let info = broker.queue("jobs").info().unwrap();
    assert_eq!(
        (info.settings.ttl.as_millis(), info.settings.max_deliveries),
        (3000, 4)
    );
    assert_eq!((info.ready, info.delayed), (1, 1));

    let d = broker.queue("jobs").try_fetch().unwrap().unwrap();
    assert_eq!((d.message_id, d.attempt), (40, 3));
    assert!(d.id >= 1 << 40, "delivery ids start at the mark");
    broker.queue("jobs").acknowledge(d.id).unwrap();
    let dead = broker.queue("jobs.dead").try_fetch().unwrap().unwrap();
    assert_eq!(dead.message_id, 41);
    assert_eq!(dead.dead_letter.unwrap().as_str(), "jobs");
    assert_eq!(broker.queue("jobs").try_fetch().unwrap(), None);
    broker.clock().advance(Duration::from_secs(5));
    broker.expire_due();
    assert_eq!(
        broker
            .queue("jobs")
            .try_fetch()
            .unwrap()
            .unwrap()
            .message_id,
        42
    );
    assert_eq!(
        broker.queue("other").publish(Bytes::new()),
        Err(Error::TooManyQueues)
    );
    // Message ids continue from the mark (the refused publish above used
    // one up).
    assert!(
        broker
            .queue("jobs")
            .publish(Bytes::new())
            .unwrap()
            .message_id
            >= 100
    );
}
