-- wrk script for the ztauthz benchmark: one request shape, an optional pool of bearer tokens.
--
--   wrk -t<T> ... -s bench/lua/bench.lua <url> -- <path> <tokens file or "-"> <first> <T>
--
-- With a tokens file (one token per line), each request carries the next token of the pool,
-- starting at <first token index>; threads take interleaved slices, so no two requests of a
-- run share a token until the pool is used up (then it wraps around, and "wrapped" counts
-- the requests that reused a token). With "-", requests carry no Authorization header.
-- When the run ends, one JSON line (prefixed BENCH_JSON) reports the counts and the latency
-- percentiles in microseconds; the harness parses only that line.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local path, tokens, index, step
wrapped = 0 -- global: done() reads it from each thread

function init(args)
  path = args[1] or "/"
  tokens = {}
  if args[2] and args[2] ~= "-" then
    for line in io.lines(args[2]) do
      if #line > 0 then tokens[#tokens + 1] = line end
    end
  end
  local first = tonumber(args[3] or "0")
  step = tonumber(args[4] or "1")
  index = first + id
  wrapped = 0
end

function request()
  if #tokens == 0 then
    return wrk.format("GET", path)
  end
  if index >= #tokens then
    wrapped = wrapped + 1
  end
  local token = tokens[(index % #tokens) + 1]
  index = index + step
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
end

function done(summary, latency, requests)
  local total_wrapped = 0
  for _, thread in ipairs(threads) do
    total_wrapped = total_wrapped + (thread:get("wrapped") or 0)
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d},' ..
    '"wrapped":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, total_wrapped))
end
