--[[ heartbeat_ping.lua: one ping of one heartbeat (a heartbeat name and one set of its key labels).

KEYS[1] the heartbeat's state hash (name, labels, first, last, due, window, expired, expired_at, pings)
KEYS[2] the index of every heartbeat (sorted set: id -> last ping, ms)
KEYS[3] the heartbeat name's set of ids (one per key label set), bounded by ARGV[6]
KEYS[4] the timers sorted set      KEYS[5] the intake stream
ARGV[1] id ("<name>" or "<name>/<hash of its key labels>")   ARGV[2] now (ms)
ARGV[3] window (ms): interval + grace   ARGV[4] name   ARGV[5] key labels (JSON)   ARGV[6] most ids per name
ARGV[7] the alert that resolves its ticket (JSON), added to the intake stream if it had expired

Moves its expiry timer ("<id>|heartbeat|<due>") to now + window, and records the ping. A heartbeat
that had expired is expired no more, and exactly one resolving alert goes to the intake stream,
however many replicas take pings at once. A heartbeat is watched from its first ping.
Returns {outcome, due}: outcome "new" (first ping), "ok", "recovered" (it had expired), or "full" (a
new key label set beyond ARGV[6]: not recorded).
Unlike the incident scripts it touches global keys (the index, the timers, the intake stream): it is
atomic on one Redis, not on Redis Cluster.
Cost: O(log n): a ZREM and a ZADD in the timers, a ZADD in the index (n their sizes); the rest O(1):
HMGET, SISMEMBER, SCARD, SADD, HSET, HINCRBY, at most one XADD.
]]
local id, now, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local st = redis.call("HMGET", KEYS[1], "due", "expired")
local due, expired = tonumber(st[1] or ""), st[2] == "1"
local outcome = "ok"
if not due then
  if redis.call("SISMEMBER", KEYS[3], id) == 0 and redis.call("SCARD", KEYS[3]) >= tonumber(ARGV[6]) then
    return {"full", 0}
  end
  redis.call("SADD", KEYS[3], id)
  redis.call("HSET", KEYS[1], "name", ARGV[4], "labels", ARGV[5], "first", now)
  outcome = "new"
else
  redis.call("ZREM", KEYS[4], id .. "|heartbeat|" .. st[1])
end
local next_due = now + window
redis.call("HSET", KEYS[1], "last", now, "due", next_due, "window", window, "expired", 0)
redis.call("HINCRBY", KEYS[1], "pings", 1)
redis.call("ZADD", KEYS[4], next_due, id .. "|heartbeat|" .. next_due)
redis.call("ZADD", KEYS[2], now, id)
if expired then
  redis.call("XADD", KEYS[5], "*", "a", ARGV[7])
  outcome = "recovered"
end
return {outcome, next_due}
