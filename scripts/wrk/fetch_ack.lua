-- wrk: fetch + acknowledge. GET /fetch?wait=0, then POST /acknowledge/{id}
-- of the id it returned. wrk keeps one Lua state per thread, shared by that
-- thread's connections, so ids fetched wait in a per-thread list and the
-- next request any connection of the thread sends acknowledges one if there
-- is one, else fetches: about one acknowledge per fetch, each of its own
-- fetched id.
--
-- Usage: wrk -s scripts/wrk/fetch_ack.lua URL [-- bare]
-- With `bare` (a server answering `{}` to everything, no ids) each thread
-- alternates GET /fetch?wait=0 and POST /acknowledge/1, so both servers see
-- the same requests. Non-2xx answers (an empty queue's 408, an
-- invalid id's 400) are counted and printed: the queue must be pre-filled.
local ids = {}
local bare = false
-- Globals, not locals: done() reads them from each thread with thread:get.
fetches, acks = 0, 0

local fetch

function init(args)
   bare = args[1] == "bare"
   -- Formatted here, not at load time, when wrk.headers has no Host yet
   -- (and ubroker answers an HTTP/1.1 request without Host with a 400).
   fetch = wrk.format("GET", "/fetch?wait=0")
end

local threads = {}

function setup(thread)
   threads[#threads + 1] = thread
end

function request()
   if bare then
      if fetches > acks then
         acks = acks + 1
         return wrk.format("POST", "/acknowledge/1", nil, "")
      end
      fetches = fetches + 1
      return fetch
   end
   local n = #ids

   if n > 0 then
      local id = ids[n]
      ids[n] = nil
      acks = acks + 1
      return wrk.format("POST", "/acknowledge/" .. id, nil, "")
   end
   fetches = fetches + 1
   return fetch
end

function response(status, headers, body)
   if status == 200 and not bare then
      local id = body:match('"id":%s*(%d+)')
      if id then
         ids[#ids + 1] = id
      end
   end
end

local report = dofile(os.getenv("WRK_REPORT") or "scripts/wrk/report.lua")

function done(summary, latency, requests)
   local f, a = 0, 0
   for _, thread in ipairs(threads) do
      f = f + thread:get("fetches")
      a = a + thread:get("acks")
   end
   io.write(string.format("CYCLES fetches=%d acknowledges=%d\n", f, a))
   report.done(summary, latency, requests)
end
