-- wrk script: consume in batches. Each request is either GET
-- /fetch?max=100&wait=0 or, when a fetch answered, POST /acknowledge with the
-- ids it leased (ids are broker-wide, so any connection of the thread may
-- send the acknowledge). Fill the queue first (publish_batch.lua).
--   wrk -t2 -c16 -d5s -s benches/wrk/fetch_ack_batch.lua http://127.0.0.1:PORT
-- done() prints the messages acknowledged per thread.
local pending = {}
local acked = 0
local fetches = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function request()
  local ids = table.remove(pending)
  if ids then
    return wrk.format("POST", "/acknowledge", {["Content-Type"] = "application/json"}, ids)
  end
  return wrk.format("GET", "/fetch?max=100&wait=0")
end

function response(status, headers, body)
  if status == 200 and string.sub(body, 1, 12) == '{"messages":' then
    local ids = {}
    for id in string.gmatch(body, '"id":(%d+)') do
      ids[#ids + 1] = id
    end
    fetches = fetches + 1
    table.insert(pending, '{"ids":[' .. table.concat(ids, ",") .. ']}')
  elseif status == 200 and string.sub(body, 1, 11) == '{"results":' then
    local _, n = string.gsub(body, '"ok"', "")
    acked = acked + n
  end
  wrk.thread:set("acked", acked)
  wrk.thread:set("fetches", fetches)
end

function done(summary, latency, requests)
  local total, batches = 0, 0
  for _, t in ipairs(threads) do
    total = total + (t:get("acked") or 0)
    batches = batches + (t:get("fetches") or 0)
  end
  io.write(string.format("acknowledged %d messages in %d batch fetches\n", total, batches))
end
