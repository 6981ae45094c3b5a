--[[ apply_alert.lua: dedupe + lifecycle for one alert of one incident, in one atomic step.

KEYS[1] incident state hash   (state, epoch, firing, opened_at, resolved_at, resolve_due, ...)
KEYS[2] incident members hash (identity -> "occurrence|status|severity")
KEYS[3] incident outbox list  (desk actions, JSON, oldest first)
KEYS[4] incident audit list   (JSON, newest first, capped)

ARGV[1]  now (ms)                 ARGV[2]  incident base "<route>:<key hash>"
ARGV[3]  alert identity           ARGV[4]  status: firing | acknowledged | resolved
ARGV[5]  severity                 ARGV[6]  occurrence (ms of starts_at): tells a re-fire from a repeat
ARGV[7]  resolve_after (ms)       ARGV[8]  reopen_within (ms; 0 = never reopen)
ARGV[9]  alert JSON (copied into the outbox entry for rendering)
ARGV[10] retention (ms) for keys that hold no open incident
ARGV[11] audit cap                ARGV[12] route name
ARGV[13] flags: "" or "suppressed" (a silence matched: firing is recorded, not acted on)

Returns {decision, incident_id, outbox length, resolve due (ms, 0 = none), reason}.

A member's versions are ordered by (occurrence, rank) with firing < acknowledged < resolved, so an
older occurrence or a late repeat can never undo a newer state: replays, HA double-sends and two
consumers racing on the same incident all converge.
]]
local K_STATE, K_MEMBERS, K_OUTBOX, K_AUDIT = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = tonumber(ARGV[1])
local base, identity, status, sev = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local occ = tonumber(ARGV[6])
local resolve_after, reopen_within = tonumber(ARGV[7]), tonumber(ARGV[8])
local alert_json, retention, audit_cap, route = ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11]), ARGV[12]
local suppressed = ARGV[13] == "suppressed"
local RANK = {firing = 0, acknowledged = 1, resolved = 2}

local function base36(n)
  local digits, out = "0123456789abcdefghijklmnopqrstuvwxyz", ""
  repeat
    local d = n % 36
    out = string.sub(digits, d + 1, d + 1) .. out
    n = math.floor(n / 36)
  until n == 0
  return out
end

local inc = redis.call("HMGET", K_STATE, "state", "epoch", "firing", "resolved_at", "resolve_due")
local state, epoch = inc[1], inc[2]
local firing = tonumber(inc[3] or "0")
local resolved_at = tonumber(inc[4] or "0")
-- A replayed entry must re-arm the hold-down timer its first run set (the timer ZADD is the caller's).
local armed_due = state == "resolving" and tonumber(inc[5] or "0") or 0
local prev = redis.call("HGET", K_MEMBERS, identity)
local p_occ, p_status, p_sev
if prev then
  local a, b, c = string.match(prev, "^(%-?%d+)|(%a+)|(%a*)$")
  p_occ, p_status, p_sev = tonumber(a), b, c
end
local member_value = occ .. "|" .. status .. "|" .. sev

local function incident_id()
  return base .. ":" .. (epoch or "")
end

local function audit(decision, reason)
  local entry = cjson.encode({at = now, decision = decision, reason = reason, identity = identity,
    status = status, severity = sev, route = route, incident = incident_id()})
  redis.call("LPUSH", K_AUDIT, entry)
  redis.call("LTRIM", K_AUDIT, 0, audit_cap - 1)
end

local function emit(decision, reason)
  local entry = '{"kind":' .. cjson.encode(decision) .. ',"incident":' .. cjson.encode(incident_id())
    .. ',"epoch":' .. cjson.encode(epoch) .. ',"route":' .. cjson.encode(route) .. ',"at":' .. now
    .. ',"reason":' .. cjson.encode(reason) .. ',"alert":' .. alert_json .. '}'
  redis.call("RPUSH", K_OUTBOX, entry)
  audit(decision, reason)
end

local function done(decision, reason, due)
  return {decision, incident_id(), redis.call("LLEN", K_OUTBOX), due or 0, reason}
end

local function keep_alive()
  for _, key in ipairs(KEYS) do redis.call("PERSIST", key) end
end

-- 1. Dedupe: an identical repeat, or an older version of this member, changes nothing.
if prev then
  if occ < p_occ or (occ == p_occ and RANK[status] < RANK[p_status]) then
    return done("DUPLICATE", "stale", armed_due)
  end
  if occ == p_occ and status == p_status and sev == p_sev then
    return done("DUPLICATE", "repeat", armed_due)
  end
end
local was_active = prev and p_status ~= "resolved" and (state == "open" or state == "resolving")

-- 2. A clear.
if status == "resolved" then
  redis.call("HSET", K_MEMBERS, identity, member_value)
  if not was_active then
    -- Nothing open for it: keep the tombstone so a late copy of its firing stays stale.
    if not state then redis.call("PEXPIRE", K_MEMBERS, retention) end
    audit("DUPLICATE", "clear without open member")
    return done("DUPLICATE", "clear without open member", armed_due)
  end
  firing = redis.call("HINCRBY", K_STATE, "firing", -1)
  if firing <= 0 and state == "open" then
    local due = now + resolve_after
    redis.call("HSET", K_STATE, "state", "resolving", "resolve_due", due, "changed_at", now)
    audit("RESOLVE_PENDING", "all members clear")
    return done("RESOLVE_PENDING", "all members clear", due)
  end
  emit("NOTE", "member resolved")
  return done("NOTE", "member resolved", 0)
end

-- 3. Firing (or acknowledged) under a silence: recorded, not acted on, unless it is already open.
if suppressed and not was_active then
  redis.call("HSET", K_MEMBERS, identity, member_value)
  if not state then redis.call("PEXPIRE", K_MEMBERS, retention) end
  audit("SUPPRESSED", "silenced")
  return done("SUPPRESSED", "silenced", 0)
end

-- 4. Firing: open, reopen, start a new epoch, or note a change.
local reopenable = state == "resolved" and reopen_within > 0 and now - resolved_at <= reopen_within
if state == "open" or state == "resolving" then
  redis.call("HSET", K_MEMBERS, identity, member_value)
  local reason
  if not was_active then
    firing = redis.call("HINCRBY", K_STATE, "firing", 1)
    reason = prev and "re-fired" or "new member"
  elseif occ > p_occ then
    reason = "re-fired"
  elseif status ~= p_status then
    reason = status
  else
    reason = "severity " .. p_sev .. " -> " .. sev
  end
  if state == "resolving" then
    redis.call("HSET", K_STATE, "state", "open", "resolve_due", 0)
    reason = reason .. " during hold-down"
  end
  redis.call("HSET", K_STATE, "changed_at", now)
  emit("NOTE", reason)
  return done("NOTE", reason, 0)
end

keep_alive()
if reopenable then
  redis.call("HSET", K_MEMBERS, identity, member_value)
  redis.call("HSET", K_STATE, "state", "open", "firing", 1, "resolve_due", 0, "changed_at", now)
  redis.call("HINCRBY", K_STATE, "reopened", 1)
  emit("REOPEN", "fired again within the reopen window")
  return done("REOPEN", "fired again within the reopen window", 0)
end

-- No incident, or the last one is past its reopen window: a new epoch (its own correlation id).
epoch = base36(now)
if epoch == inc[2] then epoch = base36(now + 1) end
redis.call("DEL", K_MEMBERS)
redis.call("HSET", K_MEMBERS, identity, member_value)
redis.call("HSET", K_STATE, "state", "open", "epoch", epoch, "firing", 1, "opened_at", now,
  "resolve_due", 0, "resolved_at", 0, "changed_at", now, "route", route, "reopened", 0)
emit("OPEN", state and "fired after the reopen window" or "first firing member")
return done("OPEN", state and "new epoch" or "first firing member", 0)
