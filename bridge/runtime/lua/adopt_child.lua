--[[ adopt_child.lua: on Redis Cluster, the child's half of a topology adoption (adopt.lua does both
halves at once on one Redis; a parent's and a child's keys are in two slots on a cluster).

KEYS[1..n] the child's keys, as apply_alert.lua's   KEYS[n+1] the child's delivery lease
ARGV[1] now (ms)   ARGV[2] the policy JSON of the route   ARGV[3] the parent's base   ARGV[4] the child's base
ARGV[5] the parent's incident id (base:epoch)   ARGV[6] the parent's route

The child's side exactly as adopt.lua's (merged into the parent, its members tombstones, its ticket
closed as a duplicate or its outbox dropped), and the parent's share written down in the child's state
(`adopt:<parent base>`: its firing members, their names, resources, ticket display) before it returns
it, for adopt_parent.lua. Run again for a child merged into this parent, it returns the same share, so
a round cut between the two halves (a crash) is completed by the next one: the child stays in the
parent's index of children until both are done (bridge/engine/adoption.py).

Returns {outcome, share JSON, child outbox length}; outcome "adopted", "done" (merged before: the share
again, "" if none was kept) or "gone" (not live).
Cost: O(members of the child).
]]
local now, policy = tonumber(ARGV[1]), cjson.decode(ARGV[2])
local parent_base, child_base, parent_id, parent_route = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local n = #KEYS - 1
local C_STATE, C_MEMBERS, C_OUTBOX, C_AUDIT, C_DETAILS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[6]
local C_LEASE = KEYS[n + 1]
local SHARE = "adopt:" .. parent_base

local c = redis.call("HMGET", C_STATE, "state", "epoch", "route", "key", "merged_into")
local state = c[1]
if state == "merged" then
  if c[5] == parent_base then
    return {"done", redis.call("HGET", C_STATE, SHARE) or "", redis.call("LLEN", C_OUTBOX)}
  end
  return {"gone", "", redis.call("LLEN", C_OUTBOX)}
end
if state ~= "open" and state ~= "resolving" and state ~= "pending" then
  return {"gone", "", redis.call("LLEN", C_OUTBOX)}
end
local child_id = child_base .. ":" .. (c[2] or "")

local function parse(value)
  if not value then return nil end
  local o, s, rest = string.match(value, "^(%-?%d+)|(%a+)|(.*)$")
  if not o then return nil end
  local v, seen, tail = string.match(rest, "^(%a*)|(%d+)|(.*)$")
  local res = tail and (string.match(tail, "^~[%x,]*|(.*)$") or tail) or ""
  return {occ = tonumber(o), status = s, rest = rest, sev = v or "", resource = res}
end

local members = redis.call("HGETALL", C_MEMBERS)
local moved, resources, seen_resource, share_members = 0, {}, {}, {}
for i = 1, #members, 2 do
  local identity, m = members[i], parse(members[i + 1])
  if m and m.status ~= "resolved" then
    moved = moved + 1
    share_members[#share_members + 1] = {identity, members[i + 1], redis.call("HGET", C_DETAILS, "n:" .. identity) or ""}
    if m.resource ~= "" and not seen_resource[m.resource] then
      seen_resource[m.resource] = true
      resources[#resources + 1] = m.resource
    end
    redis.call("HSET", C_MEMBERS, identity, m.occ .. "|resolved|" .. m.rest)
  end
end

local epoch = c[2]
local ticket = epoch and redis.call("HGET", C_STATE, "ticket:" .. epoch)
local opening = epoch and redis.call("HEXISTS", C_STATE, "opening:" .. epoch) == 1
local to_desk = ticket or opening or redis.call("EXISTS", C_LEASE) == 1
redis.call("HSET", C_STATE, "state", "merged", "merged_into", parent_base, "merged_at", now, "firing", 0,
  "flapping", 0, "resolve_due", 0, "resolved_at", now, "changed_at", now, "desk_open", 0)
redis.call("DEL", C_DETAILS)
local display = ""
if ticket then
  local ok, ref = pcall(cjson.decode, ticket)
  if ok and type(ref) == "table" then display = tostring(ref[2] ~= "" and ref[2] or ref[1]) end
end
local reason = "adopted by its topology parent " .. parent_id
if to_desk and epoch then
  redis.call("RPUSH", C_OUTBOX, cjson.encode({kind = "MERGE", incident = child_id, epoch = epoch,
    route = c[3] or parent_route, at = now, reason = reason, into = parent_id}))
else
  redis.call("DEL", C_OUTBOX)
end
redis.call("LPUSH", C_AUDIT, cjson.encode({at = now, decision = "MERGED", reason = reason, incident = child_id,
  into = parent_id, alerts = moved}))
redis.call("LTRIM", C_AUDIT, 0, policy.audit_cap - 1)
local share = cjson.encode({members = share_members, moved = moved, resources = resources, display = display,
  ticket = ticket and 1 or 0, what = (c[4] and c[4] ~= "") and c[4] or child_base})
redis.call("HSET", C_STATE, SHARE, share)
for i = 1, n do redis.call("PEXPIRE", KEYS[i], policy.retention) end
return {"adopted", share, redis.call("LLEN", C_OUTBOX)}
