--[[ lease.lua: renew or release a delivery lease only if this replica still holds it.

KEYS[1] lease key   (for "advance" also KEYS[2] the incident's outbox, KEYS[3] the ready queue)
ARGV[1] token (this replica's)   ARGV[2] "renew" | "release" | "advance"   ARGV[3] lease (ms)
ARGV[4] incident base (for "advance")

Returns 1 if the lease was ours, 0 otherwise (then the caller must stop working on the incident).
"advance" ends one delivered action: with the outbox empty it releases the lease and removes the
incident's ready marker (work the engine appends later adds it again) and returns 0; with work left
it renews the lease and returns the outbox length; -1 if the lease was not ours.
]]
if redis.call("GET", KEYS[1]) ~= ARGV[1] then
  if ARGV[2] == "advance" then return -1 end
  return 0
end
if ARGV[2] == "release" then
  redis.call("DEL", KEYS[1])
elseif ARGV[2] == "advance" then
  local left = redis.call("LLEN", KEYS[2])
  if left == 0 then
    redis.call("DEL", KEYS[1])
    redis.call("ZREM", KEYS[3], ARGV[4])
  else
    redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[3]))
  end
  return left
else
  redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[3]))
end
return 1
