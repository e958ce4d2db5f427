#!/usr/bin/env python3
"""Reads a broker's /stats (URL as the argument) and prints the write-ahead
log's group-commit figures: messages published per fsync and the fsync
latency."""
import json
import sys
import urllib.request

stats = json.load(urllib.request.urlopen(sys.argv[1] + "/stats"))
log = stats["log"]
published = sum(q["published"] for q in stats["queues"].values())
fsyncs = max(1, log["fsyncs"])
print(
    f"log: {published} published, {log['fsyncs']} fsyncs, "
    f"{published / fsyncs:.1f} messages per fsync, "
    f"{log['committed'] / fsyncs:.1f} publish requests per fsync, "
    f"mean fsync {1e3 * log['fsync_seconds_total'] / fsyncs:.3f} ms, "
    f"max {log['fsync_max_ms']:.2f} ms, {log['bytes']} bytes in {log['segments']} segments"
)
