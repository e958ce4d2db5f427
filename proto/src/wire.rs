//! The JSON objects of the API that more than one crate reads or writes,
//! field for field as `openapi.yaml` describes them.

use serde::{Deserialize, Serialize};

/// Every error answer: `{"error": "<reason>", "code": "<code>"}`; `code` is
/// one of [`crate::Code`]'s (or a newer server's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody<'a> {
    /// A human-readable reason.
    #[serde(borrow)]
    pub error: std::borrow::Cow<'a, str>,
    /// The machine-readable code.
    #[serde(borrow)]
    pub code: std::borrow::Cow<'a, str>,
}

/// Where a dead-lettered message came from: `dead_letter` of a delivery
/// fetched from a dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The queue it was dead-lettered from.
    pub queue: String,
    /// Why (`max_deliveries`).
    pub reason: String,
}

/// The outcome of one id in a settle batch (`{"results": [...]}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Settled {
    /// Acknowledged, requeued or touched.
    Ok,
    /// Unknown, already settled or expired (what `400 invalid_id` means for
    /// a single call).
    Invalid,
}

/// The body of `PUT /queues/{queue}`; `None` keeps the current value (or
/// the server's default for a new queue).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_deliveries: Option<u32>,
}

/// A queue as `GET` and `PUT /queues/{queue}` (and each entry of `GET
/// /queues`) describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    pub name: String,
    pub ttl_ms: u64,
    /// 0: unlimited.
    pub max_deliveries: u32,
    pub ready: u64,
    pub in_flight: u64,
    pub delayed: u64,
    /// Body bytes held (ready, in flight and delayed).
    pub bytes: u64,
}

/// One queue's figures in `GET /stats` (`queues.<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    pub ready: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub bytes: u64,
    pub oldest_ready_age_ms: u64,
    pub waiting_fetches: u64,
    pub published: u64,
    pub delivered: u64,
    pub acknowledged: u64,
    pub requeued: u64,
    pub expired: u64,
    pub dead_lettered: u64,
}
