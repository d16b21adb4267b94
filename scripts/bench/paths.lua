-- wrk script: requests the distinct paths PATH_PREFIX .. i, i = 0..PATHS_MAX-1
-- (env), spread over wrk's threads (WRK_THREADS must match -t). Once a thread
-- has sent its share it repeats its first path (a hit) and stops.
local counter = 0
local prefix = os.getenv("PATH_PREFIX") or "/any/"
local max = tonumber(os.getenv("PATHS_MAX") or "100000")
local threads = tonumber(os.getenv("WRK_THREADS") or "1")
local n_threads = 0
function setup(thread)
  thread:set("tid", n_threads)
  n_threads = n_threads + 1
end
function init(args)
  counter = tid or 0
end
request = function()
  if counter < max then
    local path = prefix .. counter
    counter = counter + threads
    return wrk.format("GET", path)
  end
  return wrk.format("GET", prefix .. (tid or 0))
end
response = function()
  if counter >= max then wrk.thread:stop() end
end
