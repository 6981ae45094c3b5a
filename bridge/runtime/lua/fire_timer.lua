--[[ fire_timer.lua: apply one due timer to its incident.

KEYS[1..6] as apply_alert.lua (state hash, members hash, outbox list, audit list, changes list,
           details hash)
KEYS[7..8] as apply_alert.lua's: a pending incident's units and the members it holds
ARGV[1] now (ms)
ARGV[2] timer kind: "resolve" (hold-down passed), "flap:<identity>" (the end of a flapping member's quiet
        period; "flap", of the whole incident, as older versions armed it),
        "auto@<ms>:<identity>" (the member was not repeated for <ms>: its own auto-resolve window, from
        its alert's route and rule), "auto:<identity>" (the same with the route's auto_resolve_after, as
        older versions armed it), "hold" (a topology child held pending by `topology.hold` whose parent
        did not come: it opens now)
ARGV[3] due (ms) the timer was set for
ARGV[4] policy JSON, as apply_alert.lua's (resolve_after, retention, audit_cap, auto_resolve_after,
        flap = {quiet})

Returns {decision or "", incident_id, outbox length, timers} (timers: flat {kind, due, ...} to add);
{"MOVED", incident_id, outbox length, timers, base}: fire the same timer on that incident instead (an
auto-resolve of a member its topology parent adopted).
A timer whose incident moved on (fired again during the hold-down, a newer timer replaced it, the
member repeated since) is a no-op or re-arms itself, so claiming a timer twice is safe.

Cost, whatever the incident's size: the state (HMGET), at most one member and its details (HGET, HSET),
a few counters, at most two outbox entries and one audit or changes entry (LTRIM drops at most one); a
resolve sets the expiry of the incident's keys (PEXPIRE each). An auto-resolve while the incident is
pending also moves the member's entry among those it holds (KEYS[8]) and rescores its unit (KEYS[7]), as
apply_alert.lua does: O(log n), n at most that script's cap of members held.
]]
local K_STATE, K_MEMBERS, K_OUTBOX, K_AUDIT, K_CHANGES = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_DETAILS = KEYS[6]
local K_UNITS, K_HELD = KEYS[7], KEYS[8]
local now, kind, due = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local policy = cjson.decode(ARGV[4])
local inc = redis.call("HMGET", K_STATE, "state", "epoch", "resolve_due", "route", "firing", "desk_open",
  "flapping", "last_change")
local state, epoch, resolve_due, route = inc[1], inc[2], tonumber(inc[3] or "0"), inc[4]
local firing, desk_open, flapping = tonumber(inc[5] or "0"), inc[6] == "1", tonumber(inc[7] or "0") > 0
local last_change = tonumber(inc[8] or "0")
local timers = {}
local base = string.match(K_STATE, "{(.*)}")

if kind == "hold" then
  if state ~= "pending" then return {"", "", 0, timers} end
  local held = redis.call("HMGET", K_STATE, "hold_until", "held_alert", "firing")
  local hold_until, alert_json = tonumber(held[1] or "0"), held[2]
  if hold_until == 0 or not alert_json or tonumber(held[3] or "0") <= 0 then return {"", "", 0, timers} end
  if now < hold_until then return {"", "", 0, {"hold", hold_until}} end
  local digits, n, new = "0123456789abcdefghijklmnopqrstuvwxyz", now, ""
  repeat
    local d = n % 36
    new = string.sub(digits, d + 1, d + 1) .. new
    n = math.floor(n / 36)
  until n == 0
  if new == epoch then new = new .. "0" end
  epoch = new
  local id = base .. ":" .. epoch
  redis.call("HSET", K_STATE, "state", "open", "epoch", epoch, "opened_at", now, "resolve_due", 0,
    "resolved_at", 0, "changed_at", now, "reopened", 0, "desk_open", 1, "flapping", 0, "flips", "",
    "desk", policy.desk or "", "settings", policy.settings or "")
  redis.call("HDEL", K_STATE, "pending_since", "pending_count", "hold_until", "held_alert")
  redis.call("HSET", K_DETAILS, "open_alert", alert_json)  -- what a new ticket opens with (the loop back's new_ticket)
  local reason = "no topology parent came within topology.hold"
  -- As apply_alert.lua writes an OPEN (lease.lua reads its head): the held alert's JSON as it came.
  redis.call("RPUSH", K_OUTBOX, '{"kind":"OPEN","incident":' .. cjson.encode(id) .. ',"epoch":'
    .. cjson.encode(epoch) .. ',"route":' .. cjson.encode(route or "") .. ',"at":' .. now .. ',"reason":'
    .. cjson.encode(reason) .. ',"alert":' .. alert_json .. '}')
  redis.call("LPUSH", K_AUDIT, cjson.encode({at = now, decision = "OPEN", reason = reason, incident = id,
    timer = kind}))
  redis.call("LTRIM", K_AUDIT, 0, policy.audit_cap - 1)
  return {"OPEN", id, redis.call("LLEN", K_OUTBOX), timers}
end

if not state or not epoch then return {"", "", 0, timers} end
local incident_id = base .. ":" .. epoch
-- A member's auto-resolve of an incident its topology parent adopted: the member is the parent's now.
if state == "merged" and string.sub(kind, 1, 4) == "auto" then
  return {"MOVED", incident_id, redis.call("LLEN", K_OUTBOX), timers, redis.call("HGET", K_STATE, "merged_into") or ""}
end

-- Milestones (resolves, reopens) to the audit list, notes and pending to the changes list (as
-- apply_alert.lua's `audit`).
local function audit(decision, reason)
  local list = (decision == "NOTE" or decision == "PENDING") and K_CHANGES or K_AUDIT
  redis.call("LPUSH", list, cjson.encode({at = now, decision = decision, reason = reason,
    incident = incident_id, timer = kind}))
  redis.call("LTRIM", list, 0, policy.audit_cap - 1)
end

local function emit(decision, reason, alert)
  redis.call("RPUSH", K_OUTBOX, cjson.encode({kind = decision, incident = incident_id, epoch = epoch,
    route = route, at = now, reason = reason, alert = alert}))
  audit(decision, reason)
end

local function result(decision)
  return {decision, incident_id, redis.call("LLEN", K_OUTBOX), timers}
end

local function start_hold_down()
  local at = now + policy.resolve_after
  redis.call("HSET", K_STATE, "state", "resolving", "resolve_due", at, "changed_at", now)
  timers = {"resolve", at}
  audit("RESOLVE_PENDING", "all members clear")
end

if kind == "resolve" then
  if state ~= "resolving" or resolve_due ~= due or flapping then return result("") end
  redis.call("HSET", K_STATE, "state", "resolved", "resolved_at", now, "resolve_due", 0,
    "changed_at", now, "desk_open", 0)
  emit("RESOLVE", "all members clear for the hold-down", cjson.null)
  for _, key in ipairs(KEYS) do redis.call("PEXPIRE", key, policy.retention) end
  return result("RESOLVE")
end

-- A member as the notes name it: {identity, name, status, severity, resource} from its record and the
-- name apply_alert.lua kept for it (else the identity).
local function member_alert(identity, value)
  local occ, status, sev, seen, rest = string.match(value or "", "^(%-?%d+)|(%a+)|(%a*)|(%d+)|(.*)$")
  local res = rest and (string.match(rest, "^~[%x,]*|(.*)$") or rest) or ""
  local name = redis.call("HGET", K_DETAILS, "n:" .. identity) or identity
  return {identity = identity, name = name, status = status or "?", severity = sev or "", resource = res}
end

-- The incident once no member flaps any more: what the desk missed meanwhile. `what` names the member
-- that was the last to settle (nil for the older, incident-wide timer).
local function settle_flapping(what)
  local alert = what or cjson.null
  if firing > 0 and not desk_open then
    redis.call("HSET", K_STATE, "state", "open", "desk_open", 1)
    redis.call("HINCRBY", K_STATE, "reopened", 1)
    emit("REOPEN", "stable again after flapping, still firing", alert)
    return result("REOPEN")
  end
  if firing <= 0 and desk_open then
    emit("NOTE", "stable again after flapping: all clear, resolving after the hold-down", alert)
    start_hold_down()
    return result("NOTE")
  end
  if firing <= 0 then
    redis.call("HSET", K_STATE, "state", "resolved", "resolved_at", now)
    audit("RESOLVE", "stable again after flapping; the ticket was already resolved")
    return result("")
  end
  local status = what and what.status or "firing"
  emit("NOTE", "stable again after flapping, " .. (status == "resolved" and "clear" or "still firing"), alert)
  return result("NOTE")
end

if kind == "flap" then  -- armed by an older version, for the whole incident
  if not flapping then return result("") end
  if now - last_change < policy.flap.quiet then
    timers = {"flap", last_change + policy.flap.quiet}
    return result("")
  end
  redis.call("HSET", K_STATE, "flapping", 0, "flips", "")
  return settle_flapping(nil)
end

if string.sub(kind, 1, 5) == "flap:" then
  local identity = string.sub(kind, 6)
  local record = redis.call("HGET", K_DETAILS, "f:" .. identity) or ""
  if string.sub(record, 1, 1) ~= "1" or not policy.flap then return result("") end
  local last = tonumber(string.match(record, "(%d+)$") or "0")
  if now - last < policy.flap.quiet then
    timers = {kind, last + policy.flap.quiet}
    return result("")
  end
  redis.call("HSET", K_DETAILS, "f:" .. identity, "0|")  -- stable: its changes count afresh
  local left = redis.call("HINCRBY", K_STATE, "flapping", -1)
  if left < 0 then
    redis.call("HSET", K_STATE, "flapping", 0)
    left = 0
  end
  flapping = left > 0
  local what = member_alert(identity, redis.call("HGET", K_MEMBERS, identity))
  if flapping then  -- others still flap: the incident stays as it is; this member's state is news
    if not desk_open then return result("") end
    local status = what.status == "resolved" and "clear" or "still firing"
    emit("NOTE", "stable again after flapping, " .. status, what)
    return result("NOTE")
  end
  return settle_flapping(what)
end

-- auto@<ms>:<identity> (auto:<identity>): a source that never sends a clear stopped repeating this alert.
local window, identity = string.match(kind, "^auto@(%d+):(.*)$")
if window then
  window = tonumber(window)
else
  identity, window = string.sub(kind, 6), policy.auto_resolve_after
end
local value = redis.call("HGET", K_MEMBERS, identity)
if not value or not window then return result("") end
-- "occurrence|status|severity|seen|rest", where rest is the resource, after "~marks|" when marked.
local occ, status, sev, seen, rest = string.match(value, "^(%-?%d+)|(%a+)|(%a*)|(%d+)|(.*)$")
if status == "resolved" or (state ~= "open" and state ~= "pending") then return result("") end
seen = tonumber(seen)
if seen + window > now then
  timers = {kind, seen + window}
  return result("")
end
redis.call("HSET", K_MEMBERS, identity, occ .. "|resolved|" .. sev .. "|" .. now .. "|" .. rest)
firing = redis.call("HINCRBY", K_STATE, "firing", -1)
local alert = member_alert(identity, redis.call("HGET", K_MEMBERS, identity))
if state == "pending" then
  -- Its threshold count, as apply_alert.lua keeps it: the member's entry among those the incident holds
  -- becomes a cleared one's, and its unit is scored with its newest firing member's `seen` (or leaves).
  local by = string.match(redis.call("HGET", K_STATE, "pending_by") or "", "^(%a+)@")
  if by then
    local unit = identity
    if by == "resource" then unit = string.match(rest, "^~[%x,]*|(.*)$") or rest end
    local p = "f|" .. #unit .. ":" .. unit .. "|"
    redis.call("ZADD", K_HELD, 0, "t|" .. string.format("%015d", now) .. "|" .. identity)
    redis.call("ZREM", K_HELD, p .. string.format("%015d", seen) .. "|" .. identity)
    local newest = redis.call("ZREVRANGEBYLEX", K_HELD, "(" .. string.sub(p, 1, -2) .. "}", "[" .. p, "LIMIT", 0, 1)[1]
    if newest then
      redis.call("ZADD", K_UNITS, tonumber(string.sub(newest, #p + 1, #p + 15)), unit)
    else
      redis.call("ZREM", K_UNITS, unit)
    end
  end
  audit("PENDING", "member auto-resolved before the threshold")
  return result("")
end
if firing <= 0 and not flapping then
  start_hold_down()
  return result("RESOLVE_PENDING")
end
emit("NOTE", "auto-resolved: not repeated for " .. math.floor(window / 1000) .. "s", alert)
return result("NOTE")
