-- wrk script of the bench harness: sends POST requests whose body is BENCH_BODY_SIZE bytes
-- of "x" and, when the run ends, prints one line "BENCH_WRK_RESULT {json}" with the
-- counts per status code, the error counts and latency percentiles in microseconds.

local body_size = tonumber(os.getenv("BENCH_BODY_SIZE") or "1024")
wrk.method = "POST"
wrk.body = string.rep("x", body_size)
wrk.headers["Content-Type"] = "application/octet-stream"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  -- A global of the thread's Lua state, read back in done() through thread:get().
  status_counts = {}
end

function response(status, headers, body)
  status_counts[status] = (status_counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("status_counts")) do
      totals[status] = (totals[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(totals) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_WRK_RESULT {"duration_us": %d, "requests": %d, "status_counts": {%s}, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d}}\n',
    summary.duration, summary.requests, table.concat(parts, ", "),
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max
  ))
end
