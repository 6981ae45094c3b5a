--[[ rotate_epoch.lua: start a new epoch for an incident whose ticket a human closed (or marked
won't-fix), so that the pending reopen becomes an open of a new ticket with a new correlation id.

KEYS[1] incident state hash   KEYS[2] incident outbox list   KEYS[3] incident audit list
ARGV[1] the epoch being left   ARGV[2] the new epoch   ARGV[3] now (ms)   ARGV[4] audit cap
ARGV[5] reason (for the audit trail)

Pending outbox entries of the old epoch move to the new one; the first, a REOPEN, becomes an OPEN.
Returns 1 when rotated, 0 when the incident had already moved on (another replica rotated it).
Cost: O(outbox): the whole outbox is read (LRANGE), and each entry of the old epoch rewritten (LSET,
O(its position)); once per ticket a human closed, from delivery, never per alert. The outbox holds only
the actions not delivered yet.
]]
local K_STATE, K_OUTBOX, K_AUDIT = KEYS[1], KEYS[2], KEYS[3]
local old, new, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call("HGET", K_STATE, "epoch") ~= old then return 0 end
local base = string.match(K_STATE, "{(.*)}")
redis.call("HSET", K_STATE, "epoch", new, "opened_at", now, "desk_open", 1, "changed_at", now)
local entries = redis.call("LRANGE", K_OUTBOX, 0, -1)
for i, raw in ipairs(entries) do
  local entry = cjson.decode(raw)
  if entry.epoch == old then
    entry.epoch, entry.incident = new, base .. ":" .. new
    if i == 1 and entry.kind == "REOPEN" then
      entry.kind, entry.reason = "OPEN", ARGV[5]
    end
    redis.call("LSET", K_OUTBOX, i - 1, cjson.encode(entry))
  end
end
redis.call("LPUSH", K_AUDIT, cjson.encode({at = now, decision = "OPEN", reason = ARGV[5],
  incident = base .. ":" .. new}))
redis.call("LTRIM", K_AUDIT, 0, tonumber(ARGV[4]) - 1)
return 1
