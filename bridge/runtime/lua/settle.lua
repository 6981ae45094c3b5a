--[[ settle.lua: a drain that is ending lets go of its incident's ready marker.

KEYS[1] the ready queue   ARGV[1] the incident's base
ARGV[2] the marker's score as the drain saw it just before its last read of the outbox ("" if none)

Whatever appends to an outbox then adds the incident's marker, or moves it by 1 ms where there is one
(`outbox.signal`). So a marker still at the score seen before the drain's last read stands for no work
that read missed: it is removed (reply 0). A marker moved since stays (reply 1): work may have come
after that read, and the caller makes it due. No marker: 0.
The marker is a global key and the outbox is of the incident's hash tag, so they cannot share a script.
Cost: O(log n): a ZSCORE and at most one ZREM on the ready queue (n its size).
]]
local score = redis.call("ZSCORE", KEYS[1], ARGV[1])
if not score then return 0 end
if ARGV[2] ~= "" and tonumber(score) == tonumber(ARGV[2]) then
  redis.call("ZREM", KEYS[1], ARGV[1])
  return 0
end
return 1
