//! Prints the engine-versus-baseline table of the last `cargo bench -p
//! ubroker-benches --bench engine` run, from criterion's own output
//! (`target/criterion/<group>/<impl>/<param>/new/{estimates,benchmark}.json`):
//! per group and parameter, each implementation's throughput from its median
//! time per iteration, and the ratio ubroker / baseline (above 1: the engine
//! is faster).
//!
//! Usage: `cargo run --release -p ubroker-benches --example bench_ratios
//! [-- CRITERION_DIR]` (default `target/criterion`, or `$CARGO_TARGET_DIR/criterion`).
//! Criterion runs one implementation after the other, so on a loaded
//! machine a ratio compares two moments; `contended_ratio` alternates
//! rounds for the threaded workloads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

const ENGINE: &str = "ubroker";
const BASELINE: &str = "mutex-baseline";

/// Median nanoseconds per iteration and elements per iteration.
fn measurement(dir: &Path) -> Option<(f64, f64)> {
    let read = |name: &str| -> Option<Value> {
        let text = std::fs::read_to_string(dir.join("new").join(name)).ok()?;
        serde_json::from_str(&text).ok()
    };
    let median = read("estimates.json")?["median"]["point_estimate"].as_f64()?;
    let elements = read("benchmark.json")?["throughput"]["Elements"]
        .as_f64()
        .unwrap_or(1.0);
    Some((median, elements))
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

fn name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned());
            PathBuf::from(target).join("criterion")
        });
    // group -> param -> (engine, baseline) throughput in Melem/s
    let mut rows: BTreeMap<String, BTreeMap<String, [Option<f64>; 2]>> = BTreeMap::new();
    for group in subdirs(&root) {
        for (side, implementation) in [ENGINE, BASELINE].iter().enumerate() {
            for param in subdirs(&group.join(implementation)) {
                if let Some((ns, elements)) = measurement(&param) {
                    rows.entry(name(&group))
                        .or_default()
                        .entry(name(&param))
                        .or_default()[side] = Some(elements / ns * 1_000.0);
                }
            }
        }
    }
    if rows.is_empty() {
        eprintln!(
            "no criterion results under {}: run `cargo bench -p ubroker-benches --bench engine` first",
            root.display()
        );
        std::process::exit(1);
    }
    println!("| group/param | ubroker M/s | baseline M/s | ubroker / baseline |");
    println!("|---|---|---|---|");
    for (group, params) in rows {
        let mut params: Vec<_> = params.into_iter().collect();
        // Numeric parameters in numeric order (1000 before 100000).
        params.sort_by_key(|(p, _)| (p.parse::<u64>().unwrap_or(u64::MAX), p.clone()));
        for (param, [engine, baseline]) in params {
            let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
            let ratio = match (engine, baseline) {
                (Some(e), Some(b)) => format!("**{:.2}**", e / b),
                _ => "-".to_owned(),
            };
            println!(
                "| {group}/{param} | {} | {} | {ratio} |",
                show(engine),
                show(baseline)
            );
        }
    }
}
