--[[ fire_timer.lua: apply one due timer to its incident.

KEYS[1..5] as apply_alert.lua (state hash, members hash, outbox list, audit list, changes list)
ARGV[1] now (ms)
ARGV[2] timer kind: "resolve" (hold-down passed), "flap" (quiet period check),
        "auto:<identity>" (the member was not repeated for auto_resolve_after)
ARGV[3] due (ms) the timer was set for
ARGV[4] policy JSON, as apply_alert.lua's (resolve_after, retention, audit_cap, auto_resolve_after,
        flap = {quiet})

Returns {decision or "", incident_id, outbox length, timers} (timers: flat {kind, due, ...} to add).
A timer whose incident moved on (fired again during the hold-down, a newer timer replaced it, the
member repeated since) is a no-op or re-arms itself, so claiming a timer twice is safe.
]]
local K_STATE, K_MEMBERS, K_OUTBOX, K_AUDIT, K_CHANGES = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, kind, due = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local policy = cjson.decode(ARGV[4])
local inc = redis.call("HMGET", K_STATE, "state", "epoch", "resolve_due", "route", "firing", "desk_open",
  "flapping", "last_change")
local state, epoch, resolve_due, route = inc[1], inc[2], tonumber(inc[3] or "0"), inc[4]
local firing, desk_open, flapping = tonumber(inc[5] or "0"), inc[6] == "1", inc[7] == "1"
local last_change = tonumber(inc[8] or "0")
local timers = {}
if not state or not epoch then return {"", "", 0, timers} end
local base = string.match(K_STATE, "{(.*)}")
local incident_id = base .. ":" .. epoch

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

if kind == "flap" then
  if not flapping then return result("") end
  if now - last_change < policy.flap.quiet then
    timers = {"flap", last_change + policy.flap.quiet}
    return result("")
  end
  redis.call("HSET", K_STATE, "flapping", 0, "flips", "")
  if firing > 0 and not desk_open then
    redis.call("HSET", K_STATE, "state", "open", "desk_open", 1)
    redis.call("HINCRBY", K_STATE, "reopened", 1)
    emit("REOPEN", "stable again after flapping, still firing", cjson.null)
    return result("REOPEN")
  end
  if firing <= 0 and desk_open then
    emit("NOTE", "stable again after flapping: all clear, resolving after the hold-down", cjson.null)
    start_hold_down()
    return result("NOTE")
  end
  if firing <= 0 then
    redis.call("HSET", K_STATE, "state", "resolved", "resolved_at", now)
    audit("RESOLVE", "stable again after flapping; the ticket was already resolved")
    return result("")
  end
  emit("NOTE", "stable again after flapping, still firing", cjson.null)
  return result("NOTE")
end

-- auto:<identity>: a source that never sends a clear stopped repeating this alert.
local identity = string.sub(kind, 6)
local value = redis.call("HGET", K_MEMBERS, identity)
if not value or not policy.auto_resolve_after then return result("") end
-- "occurrence|status|severity|seen|rest", where rest is the resource, after "~marks|" when marked.
local occ, status, sev, seen, rest = string.match(value, "^(%-?%d+)|(%a+)|(%a*)|(%d+)|(.*)$")
if status == "resolved" or (state ~= "open" and state ~= "pending") then return result("") end
seen = tonumber(seen)
if seen + policy.auto_resolve_after > now then
  timers = {kind, seen + policy.auto_resolve_after}
  return result("")
end
redis.call("HSET", K_MEMBERS, identity, occ .. "|resolved|" .. sev .. "|" .. now .. "|" .. rest)
firing = redis.call("HINCRBY", K_STATE, "firing", -1)
local res = string.match(rest, "^~[%x,]*|(.*)$") or rest
local alert = {identity = identity, name = identity, status = "resolved", severity = sev, resource = res}
if state == "pending" then
  audit("PENDING", "member auto-resolved before the threshold")
  return result("")
end
if firing <= 0 and not flapping then
  start_hold_down()
  return result("RESOLVE_PENDING")
end
emit("NOTE", "member auto-resolved: no repeat within auto_resolve_after", alert)
return result("NOTE")
