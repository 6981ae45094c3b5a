--[[ resolve_incident.lua: resolve an incident by hand (admin API, `bridge incidents resolve`).

KEYS[1..6] as apply_alert.lua (state hash, members hash, outbox list, audit list, changes list, details)
ARGV[1] now (ms)   ARGV[2] epoch the caller means ("" = the current one)
ARGV[3] note (free text, may be "")   ARGV[4] who (may be "")
ARGV[5] retention (ms): how long the resolved incident's keys live (covers the reopen window)
ARGV[6] audit cap

Returns {outcome, incident_id, outbox length}; outcome is "RESOLVE", "not_found", "stale_epoch"
(the incident moved on to another epoch), "already_resolved", or "pending" (below its route's
threshold: it has no ticket to resolve).

Like the hold-down timer it appends a RESOLVE to the outbox, so delivery makes the desk call in
order with everything queued before it; a NOTE saying who resolved it and why goes first. Every
member still firing is marked resolved at its current occurrence: repeats of that same firing are
then stale, and only a new occurrence (a re-fire) reopens the ticket or starts a new epoch.

Cost: O(members): every member is read (HGETALL) and each still firing rewritten, in one step, Redis
busy meanwhile. It runs once per incident, by hand (never per alert); an incident has one member per
distinct alert it had until its keys expire (capped only while pending: apply_alert.lua).
]]
local K_STATE, K_MEMBERS, K_OUTBOX, K_AUDIT = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, want, note, who = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local retention, audit_cap = tonumber(ARGV[5]), tonumber(ARGV[6])
local inc = redis.call("HMGET", K_STATE, "state", "epoch", "route", "desk_open")
local state, epoch, route = inc[1], inc[2], inc[3]
local desk_open = inc[4] ~= "0"  -- absent: the ticket is open whenever the incident is
if not state or not epoch then return {"not_found", "", 0} end
local base = string.match(K_STATE, "{(.*)}")
local incident_id = base .. ":" .. epoch
if want ~= "" and want ~= epoch then return {"stale_epoch", incident_id, redis.call("LLEN", K_OUTBOX)} end
if state == "resolved" then return {"already_resolved", incident_id, redis.call("LLEN", K_OUTBOX)} end
if state == "pending" then return {"pending", incident_id, redis.call("LLEN", K_OUTBOX)} end

local members = redis.call("HGETALL", K_MEMBERS)
for i = 1, #members, 2 do
  -- "occurrence|status|rest...": only the status changes, whatever follows it.
  local occ, status, rest = string.match(members[i + 1], "^(%-?%d+)|(%a+)|(.*)$")
  if status and status ~= "resolved" then
    redis.call("HSET", K_MEMBERS, members[i], occ .. "|resolved|" .. rest)
  end
end
redis.call("HSET", K_STATE, "state", "resolved", "resolved_at", now, "resolve_due", 0, "firing", 0,
  "changed_at", now, "resolved_by", who, "desk_open", 0, "flapping", 0)
if KEYS[6] then redis.call("DEL", KEYS[6]) end  -- no member flaps any more (its flap records go)

local reason = "resolved by hand"
if who ~= "" then reason = reason .. " by " .. who end
if note ~= "" then reason = reason .. ": " .. note end
if desk_open then
  redis.call("RPUSH", K_OUTBOX, cjson.encode({kind = "NOTE", incident = incident_id, epoch = epoch,
    route = route, at = now, reason = reason, alert = {name = "incident", status = "resolved"}}))
  redis.call("RPUSH", K_OUTBOX, cjson.encode({kind = "RESOLVE", incident = incident_id, epoch = epoch,
    route = route, at = now, reason = reason}))
end
redis.call("LPUSH", K_AUDIT, cjson.encode({at = now, decision = "RESOLVE", reason = reason,
  incident = incident_id, by = who}))
redis.call("LTRIM", K_AUDIT, 0, audit_cap - 1)
for _, key in ipairs(KEYS) do redis.call("PEXPIRE", key, retention) end
return {"RESOLVE", incident_id, redis.call("LLEN", K_OUTBOX)}
