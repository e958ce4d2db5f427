-- wrk script: POST /publish with one fixed batch of 100 messages of 30-byte
-- bodies. Usage (from the repository root):
--   wrk -t2 -c16 -d5s -s benches/wrk/publish_batch.lua http://127.0.0.1:PORT
-- Every request publishes 100 messages; non-2xx answers (429 once
-- --max-queue-bytes is reached) are counted by wrk and must be 0.
local entries = {}
for i = 1, 100 do
  entries[i] = string.format('{"body":"message %06d of the batch..."}', i)
end
wrk.method = "POST"
wrk.path = "/publish"
wrk.body = '{"messages":[' .. table.concat(entries, ",") .. ']}'
wrk.headers["Content-Type"] = "application/json"
