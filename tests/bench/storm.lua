-- wrk script for tests/bench/storm.py: round-robin alert bodies over WORKLOADS workloads, each
-- thread stopping after its share of REQUESTS; prints the ack latency percentiles and the statuses.
local workloads = tonumber(os.getenv("WORKLOADS") or "100")
local total = tonumber(os.getenv("REQUESTS") or "10000")
local token = os.getenv("TOKEN") or ""
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

-- storm.py runs wrk with 2 threads (-t2); each sends half.
local THREADS = 2

function init(args)
  n = 0
  per_thread = math.floor(total / THREADS)
  statuses = {}
end

function request()
  n = n + 1
  if n > per_thread then
    wrk.thread:stop()
  end
  local w = ((id * per_thread + n) % workloads)
  local body = string.format(
    '{"name":"StormErrors","severity":"critical","fingerprint":"storm-%d","labels":{"namespace":"storm","deployment":"w%d"}}',
    w, w)
  return wrk.format("POST", "/webhooks/generic",
    { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do counts[k] = (counts[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(counts) do table.insert(parts, string.format("%d=%d", k, v)) end
  table.sort(parts)
  io.write(string.format("RESULT requests=%d p50_ms=%.3f p99_ms=%.3f max_ms=%.3f statuses=%s\n",
    summary.requests, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, table.concat(parts, ",")))
end
