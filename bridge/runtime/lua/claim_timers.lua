--[[ claim_timers.lua: claim due timers (or ready incidents) for this replica, so each is taken once
in the common case.

KEYS[1] timers sorted set (member "<base>|<kind>|<due ms>", score = when to fire), or the ready
        queue (member an incident base, score = when its outbox may be delivered)
ARGV[1] now (ms)   ARGV[2] claim lease (ms)   ARGV[3] max entries

Claimed entries are re-scored to now + lease rather than removed: a replica that dies after
claiming leaves them to fire again later. The caller removes each one after applying it.
Returns the claimed members.
Cost: O(log n + m): one ZRANGEBYSCORE with LIMIT ARGV[3], and a ZADD for each of the m <= ARGV[3] entries
it claims (n: the set's size).
]]
local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, tonumber(ARGV[3]))
local until_ms = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, member in ipairs(due) do
  redis.call("ZADD", KEYS[1], until_ms, member)
end
return due
