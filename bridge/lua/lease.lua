--[[ lease.lua: renew or release a delivery lease only if this replica still holds it.

KEYS[1] lease key
ARGV[1] token (this replica's)   ARGV[2] "renew" | "release"   ARGV[3] lease (ms) for renew

Returns 1 if the lease was ours, 0 otherwise (then the caller must stop working on the incident).
]]
if redis.call("GET", KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == "release" then
  redis.call("DEL", KEYS[1])
else
  redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[3]))
end
return 1
