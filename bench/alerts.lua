-- wrk script: every request carries `per` alerts that no earlier request carried, or (mode repeat:<pool>)
-- `per` alerts of a fixed set of <pool>, over and over, as an Alertmanager HA pair and its repeat_interval
-- re-send alerts that are firing already.
--   wrk ... -s bench/alerts.lua URL -- <format: webhook|amapi> <per> <run tag> [unique|repeat:<pool>]
-- The repeated alerts are bench/common.py's `repeat_alert(i)`, i in 0..pool-1 (the same labels and
-- fingerprint), so the harness can send them once before wrk runs: they are open then.
-- webhook: an Alertmanager webhook (version 4) group, as Alertmanager posts it to the bridge;
-- amapi:   the same alerts as Alertmanager's own POST /api/v2/alerts takes them (a JSON array).
-- At the end, one line `BENCH_JSON {...}` with counts and latency percentiles (microseconds).
local threads = {}
-- Each thread's number: a global, which `thread:set` in `setup` gives each thread its own value of (a local
-- here stayed 0 in every thread, so both threads made the same alerts and every "unique" one went twice).
tid = 0
local counter, per, format, tag, pool = 0, 1, "webhook", "r", 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  format = args[1] or "webhook"
  per = tonumber(args[2] or "1")
  tag = args[3] or "r"
  pool = tonumber(string.match(args[4] or "", "^repeat:(%d+)$") or "0")
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

-- Repeat i of the fixed set: labels, annotations and fingerprint as bench/common.py's repeat_alert(i).
local function repeat_alert(i)
  local labels = '{"alertname":"BenchAlert' .. (i % 100) .. '","instance":"host-rep-' .. i
    .. '","job":"node","severity":"critical","run":"repeats"}'
  local rest = '"annotations":{"summary":"bench alert rep-' .. i .. '","description":"synthetic load"},'
    .. '"startsAt":"2026-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph?g0.expr=up"'
  if format == "amapi" then return '{"labels":' .. labels .. ',' .. rest .. '}' end
  return '{"status":"firing","labels":' .. labels .. ',' .. rest .. ',"endsAt":"0001-01-01T00:00:00Z",'
    .. '"fingerprint":"' .. string.format("%016x", i) .. '"}'
end

function request()
  counter = counter + 1
  local parts = {}
  for n = 1, per do
    if pool > 0 then
      parts[n] = repeat_alert(((tid - 1) * 7919 + (counter - 1) * per + n - 1) % pool)
    else
      local id = tid .. "-" .. counter .. "-" .. n
      if format == "amapi" then parts[n] = amapi_alert(id, n) else parts[n] = alert(id, n) end
    end
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
