--[[ problem_count.lua: an incident key's tickets, counted for its problem record, and the one claim to
open that record, exact across replicas. Both keys carry the incident's hash tag (one slot).

KEYS[1] the tickets the key opened: sorted set of members `[epoch, ticket id, display, url]` (JSON) by
        when they opened, trimmed to the window and to the newest 1,000
KEYS[2] the key's problem: hash `ref` (the record as JSON), `until` (ms: the window it serves),
        `claim` (a token) and `claimed` (ms) while a replica opens it
ARGV[1] now (ms)   ARGV[2] the window (ms)   ARGV[3] the op: "count", "set" or "release"
count:   ARGV[4] the tickets that open one (`after`)   ARGV[5] the new ticket's member   ARGV[6] a token
         ARGV[7] how long a claim holds (ms) before another replica may take it over
set:     ARGV[4] the token   ARGV[5] the record (JSON)
release: ARGV[4] the token

count returns {"LINK", record JSON} while a problem record serves the key (its tickets are not counted:
the next window counts anew once it ends); {"CLAIMED", member, ...} when this ticket makes `after`
within the window and no replica holds a claim (the caller opens the record, then "set"s it, and links
the members, its own included); {"WAIT"} while another replica's claim holds; else {"COUNT", n}.
Counting the same member twice (a retried delivery) adds nothing.
set returns 1 if the token still held the claim (the record is kept either way); release returns 1 if it did.
]]
local now, window, op = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local keep = window + 60000
if op == "set" then
  local held = redis.call("HGET", KEYS[2], "claim") == ARGV[4]
  redis.call("HSET", KEYS[2], "ref", ARGV[5], "until", now + window)
  redis.call("HDEL", KEYS[2], "claim", "claimed")
  redis.call("DEL", KEYS[1])  -- the tickets that made it are linked: the next window counts anew
  redis.call("PEXPIRE", KEYS[2], keep)
  return held and 1 or 0
end
if op == "release" then
  if redis.call("HGET", KEYS[2], "claim") == ARGV[4] then
    redis.call("HDEL", KEYS[2], "claim", "claimed")
    return 1
  end
  return 0
end
local after, member, token, hold = tonumber(ARGV[4]), ARGV[5], ARGV[6], tonumber(ARGV[7])
local problem = redis.call("HMGET", KEYS[2], "ref", "until", "claim", "claimed")
if problem[1] and tonumber(problem[2] or "0") > now then
  return {"LINK", problem[1]}
end
if problem[1] then redis.call("HDEL", KEYS[2], "ref", "until") end  -- its window is over
redis.call("ZADD", KEYS[1], now, member)
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now - window)
redis.call("ZREMRANGEBYRANK", KEYS[1], 0, -1001)
redis.call("PEXPIRE", KEYS[1], keep)
local n = redis.call("ZCARD", KEYS[1])
if n < after then return {"COUNT", n} end
if problem[3] and tonumber(problem[4] or "0") + hold > now then return {"WAIT"} end
redis.call("HSET", KEYS[2], "claim", token, "claimed", now)
redis.call("PEXPIRE", KEYS[2], keep)
local out = {"CLAIMED"}
for _, m in ipairs(redis.call("ZRANGE", KEYS[1], 0, -1)) do out[#out + 1] = m end
return out
