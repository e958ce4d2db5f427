-- wrk script: GET /fetch?wait=0, then POST /acknowledge/{id} for what it
-- leased (the single form, as a baseline for fetch_ack_batch.lua).
local pending = {}
function request()
  local id = table.remove(pending)
  if id then
    return wrk.format("POST", "/acknowledge/" .. id)
  end
  return wrk.format("GET", "/fetch?wait=0")
end
function response(status, headers, body)
  if status == 200 then
    local id = string.match(body, '"id":(%d+)')
    if id then table.insert(pending, id) end
  end
end
