--[[ heartbeat_expire.lua: a heartbeat's expiry timer is due: it expires, once.

KEYS[1] the heartbeat's state hash (see heartbeat_ping.lua)   KEYS[2] the intake stream
ARGV[1] the due time (ms) the timer was set for   ARGV[2] now (ms)
ARGV[3] the last ping (ms) the alert was written for   ARGV[4] the alert that opens its ticket (JSON)

Only if no ping came since the timer was set (its due time and last ping still the state's) and it
has not expired already: marks it expired and adds the alert to the intake stream. A timer claimed
twice, or one a ping replaced, does nothing. Returns 1 if it expired now, else 0.
Cost: O(1): HMGET and HSET of the heartbeat's hash, at most one XADD.
]]
local st = redis.call("HMGET", KEYS[1], "due", "last", "expired")
if st[1] ~= ARGV[1] or st[2] ~= ARGV[3] or st[3] == "1" then return 0 end
redis.call("HSET", KEYS[1], "expired", 1, "expired_at", ARGV[2])
redis.call("XADD", KEYS[2], "*", "a", ARGV[4])
return 1
