-- wrk: POST a distinct JSON body per request (so de-duplication never
-- merges them); answers that are not 2xx are reported as not-202.
local n = 0
local thread_id = 0

function setup(thread)
  thread:set("id", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  prefix = tostring(id) .. "-" .. tostring(math.random(1, 1e9))
end

function request()
  n = n + 1
  local body = '{"url":"https://example.com/page/' .. prefix .. '-' .. n .. '"}'
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end

function done(summary, latency, requests)
  io.write(string.format("not-202: %d\n", summary.errors.status))
end
