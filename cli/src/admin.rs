//! The administration commands: `queues`, `stats` (once or `--watch`),
//! `put`, `delete` and `redrive`, printed as aligned text tables or as
//! JSON.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde_json::json;
use ubroker_client::{Client, QueueInfo, QueueSettings, Stats};

use crate::exit::Failure;

/// Prints `value` as one JSON line.
pub fn print_json(value: &serde_json::Value) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()?;
    Ok(())
}

/// Prints `rows` under `header`, each column as wide as its widest cell;
/// the first column left-aligned, the others right-aligned (numbers).
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut first = true;
        for (i, cell) in cells.enumerate() {
            if !first {
                out.push_str("  ");
            }
            let width = widths[i];
            if i == 0 {
                out.push_str(&format!("{cell:<width$}"));
            } else {
                out.push_str(&format!("{cell:>width$}"));
            }
            first = false;
        }
        // No trailing spaces from the left-aligned first column.
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    };
    line(&mut out, &mut header.iter().copied());
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

fn queue_json(q: &QueueInfo) -> serde_json::Value {
    json!({
        "name": q.name, "ttl_ms": q.ttl_ms, "max_deliveries": q.max_deliveries,
        "ready": q.ready, "in_flight": q.in_flight, "delayed": q.delayed, "bytes": q.bytes,
    })
}

/// `queues`.
pub async fn queues(client: &Client, json: bool) -> Result<(), Failure> {
    let queues = client.queues().await?;
    if json {
        return print_json(&json!({ "queues": queues.iter().map(queue_json).collect::<Vec<_>>() }));
    }
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            vec![
                q.name.clone(),
                q.ready.to_string(),
                q.in_flight.to_string(),
                q.delayed.to_string(),
                q.bytes.to_string(),
                q.ttl_ms.to_string(),
                q.max_deliveries.to_string(),
            ]
        })
        .collect();
    let header = [
        "QUEUE",
        "READY",
        "IN_FLIGHT",
        "DELAYED",
        "BYTES",
        "TTL_MS",
        "MAX_DELIVERIES",
    ];
    print!("{}", table(&header, &rows));
    Ok(())
}

fn stats_table(stats: &Stats) -> String {
    let rows: Vec<Vec<String>> = stats
        .queues
        .iter()
        .map(|(name, s)| {
            vec![
                name.clone(),
                s.ready.to_string(),
                s.in_flight.to_string(),
                s.delayed.to_string(),
                s.bytes.to_string(),
                s.oldest_ready_age_ms.to_string(),
                s.waiting_fetches.to_string(),
                s.published.to_string(),
                s.acknowledged.to_string(),
                s.requeued.to_string(),
                s.expired.to_string(),
                s.dead_lettered.to_string(),
            ]
        })
        .collect();
    let header = [
        "QUEUE",
        "READY",
        "IN_FLIGHT",
        "DELAYED",
        "BYTES",
        "OLDEST_MS",
        "WAITING",
        "PUBLISHED",
        "ACKED",
        "REQUEUED",
        "EXPIRED",
        "DEAD",
    ];
    format!(
        "uptime {} s\n{}",
        stats.uptime_ms / 1000,
        table(&header, &rows)
    )
}

fn stats_json(stats: &Stats) -> serde_json::Value {
    let queues: serde_json::Map<String, serde_json::Value> = stats
        .queues
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                json!({
                    "ready": s.ready, "in_flight": s.in_flight, "delayed": s.delayed,
                    "bytes": s.bytes, "oldest_ready_age_ms": s.oldest_ready_age_ms,
                    "waiting_fetches": s.waiting_fetches, "published": s.published,
                    "delivered": s.delivered, "acknowledged": s.acknowledged,
                    "requeued": s.requeued, "expired": s.expired,
                    "dead_lettered": s.dead_lettered,
                }),
            )
        })
        .collect();
    let mut body = json!({ "uptime_ms": stats.uptime_ms, "queues": queues });
    if let Some(log) = &stats.log {
        body["log"] = log.clone();
    }
    body
}

/// `stats`, once, or every `watch` seconds until interrupted.
pub async fn stats(client: &Client, watch: Option<f64>, json: bool) -> Result<(), Failure> {
    let period = match watch {
        None => None,
        Some(secs) if secs.is_finite() && secs >= 0.1 => Some(Duration::from_secs_f64(secs)),
        Some(_) => return Err(Failure::Usage("--watch takes at least 0.1 s".into())),
    };
    let terminal = std::io::stdout().is_terminal();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let stats = client.stats().await?;
        if json {
            print_json(&stats_json(&stats))?;
        } else {
            let mut out = std::io::stdout().lock();
            if period.is_some() && terminal {
                // Redraw in place: clear the screen, cursor home.
                write!(out, "\x1b[2J\x1b[H")?;
            }
            write!(out, "{}", stats_table(&stats))?;
            if period.is_some() && !terminal {
                writeln!(out)?;
            }
            out.flush()?;
        }
        let Some(period) = period else {
            return Ok(());
        };
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            _ = &mut interrupted => return Ok(()),
        }
    }
}

/// `put`.
pub async fn put(
    client: &Client,
    queue: &str,
    ttl_ms: Option<u64>,
    max_deliveries: Option<u32>,
    json: bool,
) -> Result<(), Failure> {
    let info = client
        .queue(queue)?
        .put(QueueSettings {
            ttl_ms,
            max_deliveries,
        })
        .await?;
    if json {
        return print_json(&queue_json(&info));
    }
    println!(
        "queue {}: ttl_ms {}, max_deliveries {} ({} ready, {} in flight, {} delayed)",
        info.name, info.ttl_ms, info.max_deliveries, info.ready, info.in_flight, info.delayed
    );
    Ok(())
}

/// `delete`.
pub async fn delete(client: &Client, queue: &str, json: bool) -> Result<(), Failure> {
    let deleted = client.queue(queue)?.delete().await?;
    if json {
        return print_json(&json!({ "queue": queue, "deleted": deleted }));
    }
    println!("deleted queue {queue} and its {deleted} message(s)");
    Ok(())
}

/// `redrive`: `queue` is the source or its `.dead` queue.
pub async fn redrive(client: &Client, queue: &str, json: bool) -> Result<(), Failure> {
    let (dead, source) = match queue.strip_suffix(".dead") {
        Some(source) => (queue.to_owned(), source.to_owned()),
        None => (format!("{queue}.dead"), queue.to_owned()),
    };
    let moved = client.queue(&dead)?.redrive().await?;
    if json {
        return print_json(&json!({ "queue": dead, "source": source, "moved": moved }));
    }
    println!("moved {moved} message(s) from {dead} back to {source}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_have_no_trailing_spaces() {
        let rows = vec![
            vec!["jobs".to_owned(), "12".to_owned()],
            vec!["a-much-longer-name".to_owned(), "3".to_owned()],
        ];
        assert_eq!(
            table(&["QUEUE", "READY"], &rows),
            "QUEUE               READY\n\
             jobs                   12\n\
             a-much-longer-name      3\n"
        );
    }
}
