--[[ heartbeat_expire_state.lua: on Redis Cluster, an expiry's change to the heartbeat's own hash
(heartbeat_expire.lua also adds the opening alert to the intake stream, in another slot there).

KEYS[1] the heartbeat's state hash
ARGV[1] the due time (ms) the timer was set for   ARGV[2] now (ms)   ARGV[3] the last ping (ms)

Only if no ping came since the timer was set: marks it expired, owing its opening alert
(`open_pending`) until the caller has added it to the intake stream and cleared that; the timer stays
claimed, not removed, until then, so an expiry cut before that (a crash) comes due again and answers 1
again (the alert added at least once; a second copy is a repeat the engine ignores).
Returns 1 if the caller is to add the opening alert, else 0.
Cost: O(1): HMGET, at most one HSET.
]]
local st = redis.call("HMGET", KEYS[1], "due", "last", "expired", "open_pending")
if st[1] ~= ARGV[1] or st[2] ~= ARGV[3] then return 0 end
if st[3] == "1" then return st[4] == "1" and 1 or 0 end
redis.call("HSET", KEYS[1], "expired", 1, "expired_at", ARGV[2], "open_pending", 1)
return 1
