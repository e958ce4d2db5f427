-- Shared done() for the wrk scripts: one machine-readable line,
-- RESULT requests=N seconds=S rps=R p50_us=.. p99_us=.. p999_us=.. non2xx=.. errors=..
local M = {}

function M.done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d seconds=%.3f rps=%.0f p50_us=%d p99_us=%d p999_us=%d non2xx=%d errors=%d\n",
      summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
      e.status, e.connect + e.read + e.write + e.timeout))
end

return M
