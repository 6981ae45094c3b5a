--[[ storm_admit.lua: the storm guard's count of new incidents, exact across batches and replicas.

KEYS[1] the count: sorted set of the incident bases admitted within the window, scored by when
KEYS[2] the storm flag: the time (ms) until which the storm lasts, compared with ARGV[1] (so that a
        replay's virtual clock decides as a live run would); its Redis expiry only cleans it up
ARGV[1] now (ms)   ARGV[2] the window (ms)   ARGV[3] the limit: new incidents the window may hold
ARGV[4..] the bases of the alerts that would open a new incident, in arrival order

The engine asks before it runs the alerts' steps, so every incident counted is counted once, by
whichever replica gets here first: no more than `limit` incidents open within the window (an alert
counted that then does not open, e.g. held by a threshold, makes it fewer, never more). The first
incident refused starts the storm, and every one refused while it lasts extends it to `window` after
its arrival: "until the storm passes".

Returns one flag per candidate: 1 it may open its own incident, 0 it goes to the major incident.
Cost: O(log n) per candidate, where n <= limit (the set never holds more than `limit` bases); expired
entries are removed once per call (amortised O(1) per admitted base).
]]
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out, refused = {}, false
local storm_until = tonumber(redis.call("GET", KEYS[2]) or "0")
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now - window)
for i = 4, #ARGV do
  if redis.call("ZSCORE", KEYS[1], ARGV[i]) then
    out[#out + 1] = 1  -- admitted before (the same batch, read again after a crash)
  elseif storm_until <= now and redis.call("ZCARD", KEYS[1]) < limit then
    redis.call("ZADD", KEYS[1], now, ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
    refused = true
  end
end
if refused then
  redis.call("SET", KEYS[2], now + window, "PX", window * 2 + 60000)
end
redis.call("PEXPIRE", KEYS[1], window * 2 + 60000)
return out
