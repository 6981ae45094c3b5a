--[[ fire_timer.lua: apply one due timer to its incident.

KEYS[1..4] as apply_alert.lua (state hash, members hash, outbox list, audit list)
ARGV[1] now (ms)   ARGV[2] timer kind ("resolve")   ARGV[3] due (ms) the timer was set for
ARGV[4] retention (ms): how long a resolved incident's keys live (covers the reopen window)
ARGV[5] audit cap

Returns {decision or "", incident_id, outbox length}. A timer whose incident moved on (fired again
during the hold-down, or a newer timer replaced it) is a no-op, so claiming a timer twice is safe.
]]
local K_STATE, K_MEMBERS, K_OUTBOX, K_AUDIT = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, kind, due = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local retention, audit_cap = tonumber(ARGV[4]), tonumber(ARGV[5])
local inc = redis.call("HMGET", K_STATE, "state", "epoch", "resolve_due", "route")
local state, epoch, resolve_due, route = inc[1], inc[2], tonumber(inc[3] or "0"), inc[4]
if not state then return {"", "", 0} end
local base = string.match(K_STATE, "{(.*)}")
local incident_id = base .. ":" .. epoch

if kind == "resolve" and state == "resolving" and resolve_due == due then
  redis.call("HSET", K_STATE, "state", "resolved", "resolved_at", now, "resolve_due", 0, "changed_at", now)
  local entry = cjson.encode({kind = "RESOLVE", incident = incident_id, epoch = epoch, route = route,
    at = now, reason = "all members clear for the hold-down"})
  redis.call("RPUSH", K_OUTBOX, entry)
  redis.call("LPUSH", K_AUDIT, cjson.encode({at = now, decision = "RESOLVE",
    reason = "all members clear for the hold-down", incident = incident_id}))
  redis.call("LTRIM", K_AUDIT, 0, audit_cap - 1)
  for _, key in ipairs(KEYS) do redis.call("PEXPIRE", key, retention) end
  return {"RESOLVE", incident_id, redis.call("LLEN", K_OUTBOX)}
end
return {"", incident_id, redis.call("LLEN", K_OUTBOX)}
