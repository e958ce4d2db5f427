//! TEMPORARY (not to be committed): the engine's batch API as loops, until
//! main's "engine: batch operations" lands.
use bytes::Bytes;
use std::ops::Range;
use std::time::Duration;
use ubroker_engine::{Broker, Clock, Delivery, Error};

pub struct NewMessage {
    pub body: Bytes,
    pub delay: Duration,
}

pub trait BatchShim {
    fn publish_batch(&self, queue: &str, messages: Vec<NewMessage>) -> Result<Range<u64>, Error>;
    fn try_fetch_batch_from(
        &self,
        queue: &str,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<Delivery>,
    ) -> Result<usize, Error>;
    fn acknowledge_batch_in(&self, queue: &str, ids: &[u64]) -> Result<Vec<bool>, Error>;
    fn requeue_batch_in(
        &self,
        queue: &str,
        ids: &[u64],
        delay: Duration,
    ) -> Result<Vec<bool>, Error>;
    fn touch_batch_in(
        &self,
        queue: &str,
        ids: &[u64],
        ttl: Option<Duration>,
    ) -> Result<Vec<bool>, Error>;
}

impl<C: Clock> BatchShim for Broker<C> {
    fn publish_batch(&self, queue: &str, messages: Vec<NewMessage>) -> Result<Range<u64>, Error> {
        let mut first = None;
        let mut last = 0;
        for m in messages {
            let id = self.publish_to(queue, m.body, m.delay)?;
            first.get_or_insert(id);
            last = id;
        }
        Ok(first.map_or(0..0, |f| f..last + 1))
    }
    fn try_fetch_batch_from(
        &self,
        queue: &str,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<Delivery>,
    ) -> Result<usize, Error> {
        let mut n = 0;
        let mut bytes = 0;
        while n < max {
            if n > 0 && bytes >= max_bytes {
                break;
            }
            match self.try_fetch_from(queue)? {
                Some(d) => {
                    bytes += d.body.len();
                    out.push(d);
                    n += 1;
                }
                None => break,
            }
        }
        Ok(n)
    }
    fn acknowledge_batch_in(&self, queue: &str, ids: &[u64]) -> Result<Vec<bool>, Error> {
        ids.iter()
            .map(|&id| match self.acknowledge_in(queue, id) {
                Ok(()) => Ok(true),
                Err(Error::InvalidId) => Ok(false),
                Err(e) => Err(e),
            })
            .collect()
    }
    fn requeue_batch_in(
        &self,
        queue: &str,
        ids: &[u64],
        delay: Duration,
    ) -> Result<Vec<bool>, Error> {
        ids.iter()
            .map(|&id| match self.requeue_in(queue, id, delay) {
                Ok(()) => Ok(true),
                Err(Error::InvalidId) => Ok(false),
                Err(e) => Err(e),
            })
            .collect()
    }
    fn touch_batch_in(
        &self,
        queue: &str,
        ids: &[u64],
        ttl: Option<Duration>,
    ) -> Result<Vec<bool>, Error> {
        ids.iter()
            .map(|&id| match self.touch_in(queue, id, ttl) {
                Ok(()) => Ok(true),
                Err(Error::InvalidId) => Ok(false),
                Err(e) => Err(e),
            })
            .collect()
    }
}
