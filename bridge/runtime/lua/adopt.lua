--[[ adopt.lua: a topology parent adopts one child incident, atomically (bridge/engine/adoption.py).

KEYS[1..n]    the parent's keys, as apply_alert.lua's (state, members, outbox, audit, changes, details, ...)
KEYS[n+1..2n] the child's, the same
KEYS[2n+1]    the child's delivery lease
ARGV[1] now (ms)   ARGV[2] the policy JSON of their route (retention, audit_cap)
ARGV[3] the parent's base   ARGV[4] the child's base   ARGV[5] n: how many keys an incident has

The child's firing members join the parent (unless the parent holds them already, as new or newer), the
parent's ticket gets one note naming the child and its alerts, and the child becomes "merged" (its
`merged_into` the parent): its members are tombstones (resolved at their occurrence), its keys expire
after retention, and its ticket is closed as a duplicate of the parent's (a MERGE action in its outbox).
A child whose ticket never reached the desk (pending, held by `topology.hold`, or an open not yet taken
by delivery) leaves no desk call at all: its outbox is dropped. Later alerts of its members go to the
parent (bridge/engine/placement.py); one already placed on the child just before runs there (MOVED).

Only a live parent (open, resolving) adopts, only a live child (open, resolving, pending) is adopted;
adopting a child again is a no-op, so a replica may repeat a round another one left half done.

Cost: O(members of the child), reads and writes; both incidents' keys (on Redis Cluster, the two must
share a slot: not so yet, see docs/architecture.md).

Returns {outcome, alerts moved, parent outbox length, child outbox length}; outcome is "adopted",
"done" (adopted before), "gone" (the child is not live) or "parent_not_live".
]]
local now, policy = tonumber(ARGV[1]), cjson.decode(ARGV[2])
local parent_base, child_base = ARGV[3], ARGV[4]
local n = tonumber(ARGV[5])
local P_STATE, P_MEMBERS, P_OUTBOX, P_CHANGES, P_DETAILS = KEYS[1], KEYS[2], KEYS[3], KEYS[5], KEYS[6]
local C_STATE, C_MEMBERS, C_OUTBOX, C_AUDIT, C_DETAILS = KEYS[n + 1], KEYS[n + 2], KEYS[n + 3], KEYS[n + 4], KEYS[n + 6]
local C_LEASE = KEYS[2 * n + 1]
local RANK = {firing = 0, acknowledged = 1, resolved = 2}

local p = redis.call("HMGET", P_STATE, "state", "epoch", "route")
if (p[1] ~= "open" and p[1] ~= "resolving") or not p[2] then
  return {"parent_not_live", 0, redis.call("LLEN", P_OUTBOX), redis.call("LLEN", C_OUTBOX)}
end
local c = redis.call("HMGET", C_STATE, "state", "epoch", "route", "key", "merged_into")
local state = c[1]
if state == "merged" then
  local outcome = c[5] == parent_base and "done" or "gone"
  return {outcome, 0, redis.call("LLEN", P_OUTBOX), redis.call("LLEN", C_OUTBOX)}
end
if state ~= "open" and state ~= "resolving" and state ~= "pending" then
  return {"gone", 0, redis.call("LLEN", P_OUTBOX), redis.call("LLEN", C_OUTBOX)}
end
local parent_id = parent_base .. ":" .. p[2]
local child_id = child_base .. ":" .. (c[2] or "")

local function parse(value)
  if not value then return nil end
  local o, s, rest = string.match(value, "^(%-?%d+)|(%a+)|(.*)$")
  if not o then return nil end
  local v, seen, tail = string.match(rest, "^(%a*)|(%d+)|(.*)$")
  local res = tail and (string.match(tail, "^~[%x,]*|(.*)$") or tail) or ""
  return {occ = tonumber(o), status = s, rest = rest, sev = v or "", resource = res}
end

-- The child's firing members join the parent; all of them stay in the child as tombstones.
local members = redis.call("HGETALL", C_MEMBERS)
local moved, resources, seen_resource, added = 0, {}, {}, 0
for i = 1, #members, 2 do
  local identity, m = members[i], parse(members[i + 1])
  if m and m.status ~= "resolved" then
    moved = moved + 1
    local mine = parse(redis.call("HGET", P_MEMBERS, identity))
    if not mine or m.occ > mine.occ or (m.occ == mine.occ and RANK[m.status] > RANK[mine.status]) then
      redis.call("HSET", P_MEMBERS, identity, members[i + 1])
      if not mine or mine.status == "resolved" then
        redis.call("HINCRBY", P_STATE, "firing", 1)
        added = added + 1
      end
      local name = redis.call("HGET", C_DETAILS, "n:" .. identity)
      if name then redis.call("HSET", P_DETAILS, "n:" .. identity, name) end
    end
    if m.resource ~= "" and not seen_resource[m.resource] then
      seen_resource[m.resource] = true
      resources[#resources + 1] = m.resource
    end
    redis.call("HSET", C_MEMBERS, identity, m.occ .. "|resolved|" .. m.rest)
  end
end

-- The child: merged into the parent. Its ticket, if it has one or one may be opening, is closed as a
-- duplicate of the parent's; otherwise nothing of it reaches the desk.
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
    route = c[3] or p[3], at = now, reason = reason, into = parent_id}))
else
  redis.call("DEL", C_OUTBOX)
end
redis.call("LPUSH", C_AUDIT, cjson.encode({at = now, decision = "MERGED", reason = reason, incident = child_id,
  into = parent_id, alerts = moved}))
redis.call("LTRIM", C_AUDIT, 0, policy.audit_cap - 1)
for i = n + 1, 2 * n do redis.call("PEXPIRE", KEYS[i], policy.retention) end

-- The parent: live again if it was in its hold-down, and a note naming what it adopted.
if added > 0 and p[1] == "resolving" then
  redis.call("HSET", P_STATE, "state", "open", "resolve_due", 0)
end
redis.call("HSET", P_STATE, "changed_at", now)
if moved > 0 or ticket then
  local what = c[4] and c[4] ~= "" and c[4] or child_base
  local text = "adopted " .. what
  if display ~= "" then text = text .. " (" .. display .. ", closed as a duplicate of this ticket)" end
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
return {"adopted", moved, redis.call("LLEN", P_OUTBOX), redis.call("LLEN", C_OUTBOX)}
