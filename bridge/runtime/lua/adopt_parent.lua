--[[ adopt_parent.lua: on Redis Cluster, the parent's half of a topology adoption, after
adopt_child.lua (see there and adopt.lua, whose parent side this is).

KEYS[1..n] the parent's keys, as apply_alert.lua's
ARGV[1] now (ms)   ARGV[2] the policy JSON of the route   ARGV[3] the parent's base   ARGV[4] the child's base
ARGV[5] the child's share, as adopt_child.lua returned it

The child's firing members join the parent (unless it holds them already, as new or newer), the
parent's ticket gets one note naming the child and its alerts, and the parent notes that it took this
child's share (`adopted:<child base>` in its state), so that running this again does nothing.
A parent no longer live (closed between the round's check and here) takes nothing.

Returns {outcome, alerts moved, parent outbox length}; outcome "adopted", "done" or "parent_not_live".
Cost: O(members of the child).
]]
local now, policy = tonumber(ARGV[1]), cjson.decode(ARGV[2])
local parent_base, child_base, share = ARGV[3], ARGV[4], cjson.decode(ARGV[5])
local P_STATE, P_MEMBERS, P_OUTBOX, P_CHANGES, P_DETAILS = KEYS[1], KEYS[2], KEYS[3], KEYS[5], KEYS[6]
local RANK = {firing = 0, acknowledged = 1, resolved = 2}
local TAKEN = "adopted:" .. child_base

if redis.call("HEXISTS", P_STATE, TAKEN) == 1 then
  return {"done", 0, redis.call("LLEN", P_OUTBOX)}
end
local p = redis.call("HMGET", P_STATE, "state", "epoch", "route")
if (p[1] ~= "open" and p[1] ~= "resolving") or not p[2] then
  return {"parent_not_live", 0, redis.call("LLEN", P_OUTBOX)}
end
local parent_id = parent_base .. ":" .. p[2]

local function parse(value)
  if not value then return nil end
  local o, s, rest = string.match(value, "^(%-?%d+)|(%a+)|(.*)$")
  if not o then return nil end
  return {occ = tonumber(o), status = s}
end

local added = 0
for _, entry in ipairs(share.members) do
  local identity, value, name = entry[1], entry[2], entry[3]
  local m, mine = parse(value), parse(redis.call("HGET", P_MEMBERS, identity))
  if m and (not mine or m.occ > mine.occ or (m.occ == mine.occ and RANK[m.status] > RANK[mine.status])) then
    redis.call("HSET", P_MEMBERS, identity, value)
    if not mine or mine.status == "resolved" then
      redis.call("HINCRBY", P_STATE, "firing", 1)
      added = added + 1
    end
    if name ~= "" then redis.call("HSET", P_DETAILS, "n:" .. identity, name) end
  end
end

if added > 0 and p[1] == "resolving" then
  redis.call("HSET", P_STATE, "state", "open", "resolve_due", 0)
end
redis.call("HSET", P_STATE, "changed_at", now, TAKEN, now)
local moved, resources = share.moved, share.resources
if moved > 0 or share.ticket == 1 then
  local what = share.what
  local text = "adopted " .. what
  if share.display ~= "" then text = text .. " (" .. share.display .. ", closed as a duplicate of this ticket)" end
  local shown = {}
  for i = 1, math.min(#resources, 10) do shown[i] = resources[i] end
  text = text .. ": " .. moved .. (moved == 1 and " alert" or " alerts")
  if #shown > 0 then
    text = text .. " on " .. table.concat(shown, ", ") .. (#resources > #shown and (" and " .. (#resources - #shown)
      .. " more") or "")
  end
  local entry = {kind = "NOTE", incident = parent_id, epoch = p[2], route = p[3], at = now, reason = text,
    alert = {name = what, status = "firing"}}
  redis.call("RPUSH", P_OUTBOX, cjson.encode(entry))
  redis.call("LPUSH", P_CHANGES, cjson.encode({at = now, decision = "NOTE", reason = text, incident = parent_id}))
  redis.call("LTRIM", P_CHANGES, 0, policy.audit_cap - 1)
end
return {"adopted", moved, redis.call("LLEN", P_OUTBOX)}
