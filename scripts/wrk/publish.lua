-- wrk: POST /publish with a 30-byte body, on every connection, back to back.
-- Usage: wrk -s scripts/wrk/publish.lua URL
-- Prints a RESULT line (requests/s, latency percentiles, non-2xx) in done().
wrk.method = "POST"
wrk.path = "/publish"
wrk.body = '{"body":"012345678901234567890123456789"}'
wrk.headers["Content-Type"] = "application/json"

local report = dofile(os.getenv("WRK_REPORT") or "scripts/wrk/report.lua")
done = report.done
