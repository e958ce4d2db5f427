//! The ubroker wire contract in one place (SPEC, "Errors" and the route
//! descriptions; `openapi.yaml` is its machine-readable form, and
//! `tests/openapi.rs` checks this crate against it). The engine, the
//! server, the client, the CLI and the fuzz model use it instead of
//! restating it.
//!
//! # Layout
//!
//! * `code`: [`Code`], every machine-readable error code, each with the
//!   HTTP status it is answered with ([`Code::status`], [`Code::statuses`])
//!   and whether a client may retry it ([`Code::retry`], [`Retry`]).
//! * `name`: the queue-name rule: [`is_valid_queue_name`],
//!   [`QUEUE_NAME_PATTERN`], [`MAX_QUEUE_NAME_LEN`], [`DEAD_SUFFIX`].
//! * `wire`: the JSON objects of the API that more than one crate reads or
//!   writes: [`ErrorBody`], [`DeadLetter`], [`Settled`], [`QueueSettings`],
//!   [`QueueInfo`], [`QueueStats`].
//!
//! No I/O and no HTTP library: statuses are plain `u16`s.

mod code;
mod name;
mod wire;

pub use code::{Code, Retry};
pub use name::{base_of, is_valid_queue_name, DEAD_SUFFIX, MAX_QUEUE_NAME_LEN, QUEUE_NAME_PATTERN};
pub use wire::{DeadLetter, ErrorBody, QueueInfo, QueueSettings, QueueStats, Settled};
