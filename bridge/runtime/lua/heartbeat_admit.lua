--[[ heartbeat_admit.lua: on Redis Cluster, the first part of a ping (heartbeat_ping.lua does it all on
one Redis): whether a heartbeat id may be watched, under its name's bound of key label sets.

KEYS[1] the heartbeat name's set of ids   ARGV[1] the id   ARGV[2] most ids per name
Returns 1 (a member already, or added within the bound) or 0 (a new key label set beyond it).
Cost: O(1): SISMEMBER, SCARD, at most one SADD.
]]
if redis.call("SISMEMBER", KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call("SCARD", KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call("SADD", KEYS[1], ARGV[1])
return 1
