--[[ heartbeat_ping_state.lua: on Redis Cluster, a ping's change to the heartbeat's own hash; the global
keys heartbeat_ping.lua also writes on one Redis (the timers, the index, the intake stream) are in other
slots, and bridge/runtime/heartbeats.py writes them around this: the new expiry timer before, the old
one's removal, the index and the resolving alert after.

KEYS[1] the heartbeat's state hash
ARGV[1] id   ARGV[2] now (ms)   ARGV[3] window (ms)   ARGV[4] name   ARGV[5] key labels (JSON)
ARGV[6] "1" if heartbeat_admit.lua admitted the id

A heartbeat that had expired is expired no more and owes its resolving alert (`resolve_pending`) until
the caller has added it to the intake stream and cleared that: a ping cut before that (a crash) leaves
it owed, and the next ping answers "recovered" again, so the alert is added at least once (a second copy
is a repeat the engine ignores).
Returns {outcome, due, the previous due or 0}: outcome "new", "ok", "recovered", or "full" (not admitted).
Cost: O(1): HMGET, HSET, HINCRBY.
]]
local now, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local st = redis.call("HMGET", KEYS[1], "due", "expired", "resolve_pending")
local outcome = "ok"
if not st[1] then
  if ARGV[6] ~= "1" then return {"full", 0, 0} end
  redis.call("HSET", KEYS[1], "name", ARGV[4], "labels", ARGV[5], "first", now)
  outcome = "new"
end
local next_due = now + window
redis.call("HSET", KEYS[1], "last", now, "due", next_due, "window", window, "expired", 0)
redis.call("HINCRBY", KEYS[1], "pings", 1)
if st[2] == "1" or st[3] == "1" then
  redis.call("HSET", KEYS[1], "resolve_pending", 1)
  outcome = "recovered"
end
return {outcome, next_due, tonumber(st[1] or "0")}
