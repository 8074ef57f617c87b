-- Closed-loop POST load for wrk (4.x, LuaJIT), used by bench.loadgen.run_wrk.
--
-- Environment:
--   BENCH_BODY_FILE  path to the request body (required)
--   BENCH_HEADERS    optional extra headers, "name: value" pairs separated by "\n"
--
-- Every request is POST with content-type: application/json. done() prints ONE line:
--   BENCHJSON {"requests":…,"duration_s":…,"errors":…,"rps":…,"p50":…,…}
-- with latencies in microseconds; errors = connect + read + write + timeout + status >= 400
-- (summary.errors.status, so no per-response Lua callback slows the run down).

local body_file = os.getenv("BENCH_BODY_FILE")
if body_file == nil or body_file == "" then
  error("post.lua: set BENCH_BODY_FILE to the path of the request body")
end
local handle = io.open(body_file, "rb")
if handle == nil then
  error("post.lua: cannot open BENCH_BODY_FILE " .. body_file)
end
local body = handle:read("*a")
handle:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["content-type"] = "application/json"

local extra = os.getenv("BENCH_HEADERS")
if extra ~= nil then
  for line in string.gmatch(extra, "[^\n]+") do
    local name, value = string.match(line, "^%s*([^:]+):%s*(.-)%s*$")
    if name ~= nil then
      wrk.headers[name] = value
    end
  end
end

function done(summary, latency, requests)
  local errors = summary.errors
  local failed = errors.connect + errors.read + errors.write + errors.timeout + errors.status
  local duration_s = summary.duration / 1e6
  local rps = 0
  if duration_s > 0 then
    rps = summary.requests / duration_s
  end
  local fields = {
    string.format('"requests":%d', summary.requests),
    string.format('"duration_s":%.6f', duration_s),
    string.format('"errors":%d', failed),
    string.format('"rps":%.3f', rps),
    string.format('"p50":%.1f', latency:percentile(50)),
    string.format('"p90":%.1f', latency:percentile(90)),
    string.format('"p99":%.1f', latency:percentile(99)),
    string.format('"p999":%.1f', latency:percentile(99.9)),
    string.format('"max":%.1f', latency.max),
    string.format('"mean":%.1f', latency.mean),
    string.format(
      '"error_detail":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d}',
      errors.connect, errors.read, errors.write, errors.timeout, errors.status
    ),
  }
  io.write("BENCHJSON {" .. table.concat(fields, ",") .. "}\n")
end
