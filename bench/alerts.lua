-- wrk script: every request carries `per` alerts that no earlier request carried.
--   wrk ... -s bench/alerts.lua URL -- <format: webhook|amapi> <per> <run tag>
-- webhook: an Alertmanager webhook (version 4) group, as Alertmanager posts it to the bridge;
-- amapi:   the same alerts as Alertmanager's own POST /api/v2/alerts takes them (a JSON array).
-- At the end, one line `BENCH_JSON {...}` with counts and latency percentiles (microseconds).
local threads = {}
local tid, counter, per, format, tag = 0, 0, 1, "webhook", "r"

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  format = args[1] or "webhook"
  per = tonumber(args[2] or "1")
  tag = args[3] or "r"
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

local function alert(id, n)
  -- Alertmanager always sends a fingerprint; a unique one per alert, as 16 hex digits.
  local fp = string.format("%04x%06x%06x", tid % 65536, counter % 16777216, n)
  return '{"status":"firing","labels":{"alertname":"BenchAlert' .. (n % 100) .. '","instance":"host-'
    .. id .. '","job":"node","severity":"critical","run":"' .. tag .. '"},"annotations":{"summary":"bench alert '
    .. id .. '","description":"synthetic load"},"startsAt":"2026-01-01T00:00:00Z","endsAt":"0001-01-01T00:00:00Z",'
    .. '"generatorURL":"http://prometheus:9090/graph?g0.expr=up","fingerprint":"' .. fp .. '"}'
end

local function amapi_alert(id, n)
  return '{"labels":{"alertname":"BenchAlert' .. (n % 100) .. '","instance":"host-' .. id
    .. '","job":"node","severity":"critical","run":"' .. tag .. '"},"annotations":{"summary":"bench alert '
    .. id .. '","description":"synthetic load"},"startsAt":"2026-01-01T00:00:00Z",'
    .. '"generatorURL":"http://prometheus:9090/graph?g0.expr=up"}'
end

function request()
  counter = counter + 1
  local parts = {}
  for n = 1, per do
    local id = tid .. "-" .. counter .. "-" .. n
    if format == "amapi" then parts[n] = amapi_alert(id, n) else parts[n] = alert(id, n) end
  end
  local body
  if format == "amapi" then
    body = "[" .. table.concat(parts, ",") .. "]"
  else
    body = '{"version":"4","groupKey":"{}:{run=\\"' .. tag .. '\\"}","truncatedAlerts":0,"status":"firing",'
      .. '"receiver":"bridge","groupLabels":{},"commonLabels":{},"commonAnnotations":{},'
      .. '"externalURL":"http://alertmanager:9093","alerts":[' .. table.concat(parts, ",") .. ']}'
  end
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,'
      .. '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
      .. '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
