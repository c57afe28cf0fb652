-- wrk script for the bench: every request carries a different identity,
-- cycling through BENCH_IDENTITIES distinct (tenant, user) pairs, the same
-- ones the bench pre-warms (tenant-%03d with i % 100, user-%05d with i).
-- Requests are formatted once in init, so the per-request Lua cost is a
-- table lookup and the load generator stays cheap. The same script drives
-- every variant, so the client does identical work for A, B and C.

local n = tonumber(os.getenv("BENCH_IDENTITIES")) or 10000
local reqs = {}
local i = 0

function init(args)
  for k = 1, n do
    local id = k - 1
    reqs[k] = wrk.format("GET", wrk.path, {
      ["Host"] = wrk.host,
      ["X-Zapier-Tenant"] = string.format("tenant-%03d", id % 100),
      ["X-Zapier-User"] = string.format("user-%05d", id),
    })
  end
  -- Threads start at different places so they do not move in lockstep.
  i = math.random(n) - 1
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end

-- One machine-readable line; latencies in microseconds.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d errors_connect=%d errors_read=%d errors_write=%d errors_status=%d errors_timeout=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
