--[[ lease.lua: renew or release a delivery lease only if this replica still holds it.

KEYS[1] lease key   (for "advance" and "pop" also KEYS[2] the incident's outbox; for "take" KEYS[2]
                     the outbox, KEYS[3] the incident's state hash: all of one incident's hash tag)
ARGV[1] token (this replica's)   ARGV[2] "take" | "renew" | "release" | "advance" | "pop"
ARGV[3] lease (ms)   ARGV[4] for "take": how many outbox entries to read
ARGV[4], ARGV[5] for "advance" and "pop": how many entries the finished action took off the head of
                 the outbox, and the first of them

"take" acquires the lease (SET NX PX) and, if it did, answers {1, outbox head (up to ARGV[4] entries),
state hash (flat), marked}: when the head is an OPEN whose epoch has no ticket yet, the epoch's
`opening:` marker is set here, before any desk call, and `marked` is 1 if this call set it (no
earlier attempt); 0 means an earlier open's outcome is unknown. Not acquired: {0}. A lease this
token holds already is taken again (and renewed): one replica drains an incident once at a time, so
it is this replica's own, left by a drain here that failed before releasing it, or by this same take
made again after its round trip failed (bridge/runtime/batch.py); either way no one else is draining.

Returns 1 if the lease was ours, 0 otherwise (then the caller must stop working on the incident).
"advance" and "pop" take the finished action's entries off the outbox only if they are still at its
head: the same call made twice (a round trip made again after its connection failed) takes them once,
not the next action's too. "pop" does only that (a dead-lettered action). "advance" ends one
delivered action: with the outbox empty it releases the lease and returns 0 (the
caller then lets go of the ready marker with settle.lua: it is not of this incident's hash tag); with
work left it renews the lease and returns the outbox length; -1 if the lease was not ours.

Cost: "take" is SET NX, an LRANGE of at most ARGV[4] entries, HEXISTS and HSETNX, and HGETALL of the
state hash: O(its fields), a few dozen plus two or three for each epoch the incident has had (ticket:,
opening:, sent:) and one per field owned. The others are O(1): GET, PEXPIRE, DEL, LINDEX 0, an LPOP of
the action's entries (ARGV[4] of them), LLEN.
]]
if ARGV[2] == "take" then
  if not redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", tonumber(ARGV[3])) then
    if redis.call("GET", KEYS[1]) ~= ARGV[1] then return {0} end
    redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[3]))  -- ours already: see "take" above
  end
  local head = redis.call("LRANGE", KEYS[2], 0, tonumber(ARGV[4]) - 1)
  local marked = 0
  local incident, epoch = string.match(head[1] or "", '^{"kind":"OPEN","incident":"([^"\\]*)","epoch":"([^"\\]*)"')
  if epoch and redis.call("HEXISTS", KEYS[3], "ticket:" .. epoch) == 0 then
    marked = redis.call("HSETNX", KEYS[3], "opening:" .. epoch, incident)
  end
  return {1, head, redis.call("HGETALL", KEYS[3]), marked}
end
if redis.call("GET", KEYS[1]) ~= ARGV[1] then
  if ARGV[2] == "advance" then return -1 end
  return 0
end
if ARGV[2] == "release" then
  redis.call("DEL", KEYS[1])
  return 1
end
if ARGV[2] == "renew" then
  redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[3]))
  return 1
end
-- "advance" and "pop": the finished action's entries, if they are still at the head
if redis.call("LINDEX", KEYS[2], 0) == ARGV[5] then
  redis.call("LPOP", KEYS[2], tonumber(ARGV[4]))
end
if ARGV[2] == "pop" then return 1 end
local left = redis.call("LLEN", KEYS[2])
if left == 0 then
  redis.call("DEL", KEYS[1])
else
  redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[3]))
end
return left
