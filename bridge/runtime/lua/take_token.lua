--[[ take_token.lua: one token from a desk's shared token bucket, so that all replicas together
keep to the desk's rate limit.

KEYS[1] the desk's bucket hash (tokens, at)
ARGV[1] now (ms)   ARGV[2] refill rate (tokens per ms)   ARGV[3] burst (bucket size)

Returns 0 when a token was taken, else how many ms until one will be there (nothing is taken).
Cost: O(1): HMGET, HSET and PEXPIRE of one hash of two fields.
]]
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local bucket = redis.call("HMGET", KEYS[1], "tokens", "at")
local tokens = tonumber(bucket[1] or burst)
local at = tonumber(bucket[2] or now)
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call("HSET", KEYS[1], "tokens", tostring(tokens), "at", now)
redis.call("PEXPIRE", KEYS[1], math.ceil(burst / rate) + 60000)
return wait
