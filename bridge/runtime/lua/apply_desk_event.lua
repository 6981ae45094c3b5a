--[[ apply_desk_event.lua: apply one desk-side change (the loop back) to its incident, once and in desk order.

KEYS[1] incident state hash   KEYS[2] incident members hash   KEYS[3] incident outbox list
KEYS[4] incident audit list   KEYS[5] incident details hash ("s:<identity>": a member's source and labels,
        "open_alert": the alert JSON its ticket opened with)   KEYS[6] incident upstream list (actions for
        the monitoring tools, JSON, oldest first: bridge/delivery/upstreams.py)

ARGV[1] now (ms)               ARGV[2] the epoch the ticket belongs to (from the ticket index or the
                                       correlation id)
ARGV[3] kind: resolved | cancelled | reopened | assigned | commented | updated (bridge.core.sync.DeskEventKind)
ARGV[4] the desk's time of the change (ms)   ARGV[5] the change's id on the desk
ARGV[6] author                 ARGV[7] text (a comment, a state's name; cut to 1,000 characters)
ARGV[8] the ticket as people name it   ARGV[9] the route's policy JSON (its `sync`, retention, audit_cap)
ARGV[10] "1" when the change is the bridge's own (integration user, MARKER): never applied
ARGV[11] the desk's name

Order and once: the state keeps, per epoch, the desk time of the last change applied (`desk_at:<epoch>`)
and the ids applied at that time (`desk_ids:<epoch>`, the last 16). A change older than it, or one of
those ids again, is dropped (DUPLICATE): however often, and through whichever replica, a change comes
(pushed, polled, both, twice), it is applied once, and an older change never undoes a newer one.

Effects, by kind and the route's `sync` policy:
  resolved, members still firing: mute_until_clear -> `muted` (apply_alert.lua: notes only, then settles
    without a desk call once all clear); reopen -> a REOPEN action; new_ticket -> a new epoch and an OPEN
    action now (what still fires gets its own ticket, with a new correlation id), made of the alert the
    ticket opened with (KEYS[5] `open_alert`; an incident that kept none, opened by an older version, is muted).
  resolved, all members clear: resolved here, no desk call.
  cancelled: resolved here, never reopened (`resolved_at` 0: the next firing opens a new ticket); members
    still firing are marked cleared at their occurrence (repeats stay quiet); their labels are returned
    for the silence (route `on_desk_cancel_silence`).
  reopened: `muted` lifted, the ticket counts as open.
  assigned: with `on_desk_assign: acknowledge`, an ACK upstream action per source of its members, once
    per epoch.
  commented: with `on_desk_comment: upstream`, a COMMENT upstream action per source.
  A ticket resolved or cancelled releases the acknowledgements upstream (a RELEASE per source holding one).
Every change applied goes to the audit trail (decision DESK_EVENT: kind, author, desk time).

Returns {outcome, incident_id, outbox length, upstream length, labels}: outcome one of MUTED, REOPEN, OPEN,
RESOLVED, CANCELLED, ACKNOWLEDGE, COMMENT, RECORDED, DUPLICATE, OURS, OTHER_EPOCH, UNKNOWN; labels a list
of the labels JSON of the members to silence (CANCELLED only).

Cost: O(1) but for a cancel of an incident with members still firing (each member read once: HGETALL, as
resolve_incident.lua), and the upstream actions (one per source of its members).
]]
local K_STATE, K_MEMBERS, K_OUTBOX, K_AUDIT, K_DETAILS, K_UPSTREAM = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now, want, kind = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local at, event_id, author, text, ticket = tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local policy = cjson.decode(ARGV[9])
local ours, desk = ARGV[10] == "1", ARGV[11] or ""
local sync = policy.sync or {resolve = "mute_until_clear", assign = "acknowledge", cancel_silence = 0,
  comment = "ignore"}
local IDS_KEPT, UPSTREAM_CAP = 16, 200

local inc = redis.call("HMGET", K_STATE, "state", "epoch", "firing", "route", "muted", "srcs")
local state, epoch, firing, route = inc[1], inc[2], tonumber(inc[3] or "0"), inc[4] or ""
local base = string.match(K_STATE, "{(.*)}")
local incident_id = base .. ":" .. (epoch or "")
local function reply(outcome, labels)
  return {outcome, incident_id, redis.call("LLEN", K_OUTBOX), redis.call("LLEN", K_UPSTREAM), labels or {}}
end
if not state or not epoch then return reply("UNKNOWN") end
if ours then return reply("OURS") end
if want ~= epoch then return reply("OTHER_EPOCH") end

-- Once, in desk order.
local seen = redis.call("HMGET", K_STATE, "desk_at:" .. epoch, "desk_ids:" .. epoch)
local last_at, ids = tonumber(seen[1] or "-1"), seen[2] or ""
if at < last_at or (at == last_at and string.find("," .. ids .. ",", "," .. event_id .. ",", 1, true)) then
  return reply("DUPLICATE")
end
if at > last_at then ids = "" end
local kept = {}
for id in string.gmatch(ids, "[^,]+") do kept[#kept + 1] = id end
kept[#kept + 1] = event_id
while #kept > IDS_KEPT do table.remove(kept, 1) end
redis.call("HSET", K_STATE, "desk_at:" .. epoch, at, "desk_ids:" .. epoch, table.concat(kept, ","))

local function audit(outcome)
  redis.call("LPUSH", K_AUDIT, cjson.encode({at = now, decision = "DESK_EVENT", kind = kind, author = author,
    desk_at = at, event = event_id, text = string.sub(text, 1, 200), ticket = ticket, desk = desk,
    outcome = outcome, incident = incident_id}))
  redis.call("LTRIM", K_AUDIT, 0, (policy.audit_cap or 200) - 1)
end

local function upstream(action, source, extra)
  if redis.call("LLEN", K_UPSTREAM) >= UPSTREAM_CAP then  -- a tool down for long: the oldest make room
    redis.call("LPOP", K_UPSTREAM)
    redis.call("HINCRBY", K_STATE, "upstream_dropped", 1)
  end
  local entry = {kind = action, source = source, incident = incident_id, epoch = epoch, ticket = ticket,
    author = author, text = string.sub(text, 1, 1000), at = now, desk = desk}
  for k, v in pairs(extra or {}) do entry[k] = v end
  redis.call("RPUSH", K_UPSTREAM, cjson.encode(entry))
  if state ~= "resolved" then redis.call("PERSIST", K_UPSTREAM) end  -- lives as long as the incident
end

local function sources()
  local out = {}
  for source in string.gmatch(inc[6] or "", "[^,]+") do out[#out + 1] = source end
  return out
end

-- The ticket is resolved or closed: what the tools were told to keep quiet about is released.
local function release()
  for _, source in ipairs(sources()) do
    if redis.call("HEXISTS", K_STATE, "ack:" .. source) == 1 then upstream("RELEASE", source) end
  end
end

local function new_epoch()
  local digits, n, out = "0123456789abcdefghijklmnopqrstuvwxyz", now, ""
  repeat
    local d = n % 36
    out = string.sub(digits, d + 1, d + 1) .. out
    n = math.floor(n / 36)
  until n == 0
  if out == epoch then out = out .. "0" end
  return out
end

local function emit(action, reason, alert_json)
  redis.call("RPUSH", K_OUTBOX, '{"kind":' .. cjson.encode(action) .. ',"incident":' .. cjson.encode(incident_id)
    .. ',"epoch":' .. cjson.encode(epoch) .. ',"route":' .. cjson.encode(route) .. ',"at":' .. now
    .. ',"reason":' .. cjson.encode(reason) .. ',"alert":' .. (alert_json or "null") .. '}')
end

local function settle(resolved_at)
  redis.call("HSET", K_STATE, "state", "resolved", "resolved_at", resolved_at, "resolve_due", 0, "changed_at", now,
    "desk_open", 0, "muted", 0)
  for _, key in ipairs(KEYS) do redis.call("PEXPIRE", key, policy.retention) end
end

local live = state == "open" or state == "resolving"
local who = author ~= "" and (" by " .. author) or ""

if kind == "resolved" then
  if not live then
    redis.call("HSET", K_STATE, "desk_open", 0)
    audit("RECORDED")
    return reply("RECORDED")
  end
  release()
  if state == "resolving" or firing <= 0 then
    settle(now)
    audit("RESOLVED")
    return reply("RESOLVED")
  end
  if sync.resolve == "reopen" then
    redis.call("HSET", K_STATE, "desk_open", 1, "muted", 0, "changed_at", now)
    redis.call("HINCRBY", K_STATE, "reopened", 1)
    emit("REOPEN", "resolved at the desk" .. who .. " while " .. firing .. " alerts still fire",
      redis.call("HGET", K_DETAILS, "open_alert"))
    audit("REOPEN")
    return reply("REOPEN")
  end
  local opened_with = sync.resolve == "new_ticket" and redis.call("HGET", K_DETAILS, "open_alert")
  if opened_with then  -- (an incident opened before this version kept no alert to open with: muted instead)
    epoch = new_epoch()
    incident_id = base .. ":" .. epoch
    redis.call("HSET", K_STATE, "epoch", epoch, "opened_at", now, "desk_open", 1, "muted", 0, "reopened", 0,
      "changed_at", now)
    emit("OPEN", "ticket " .. ticket .. " was resolved at the desk" .. who .. " while " .. firing
      .. " alerts still fire: a new ticket", opened_with)
    audit("OPEN")
    return reply("OPEN")
  end
  redis.call("HSET", K_STATE, "muted", 1, "desk_open", 0, "changed_at", now)
  audit("MUTED")
  return reply("MUTED")
end

if kind == "cancelled" then
  local labels = {}
  if state ~= "resolved" and state ~= "merged" then
    release()
    if state ~= "pending" then
      local members = redis.call("HGETALL", K_MEMBERS)
      for i = 1, #members, 2 do
        local occ, status, rest = string.match(members[i + 1], "^(%-?%d+)|(%a+)|(.*)$")
        if status and status ~= "resolved" then
          redis.call("HSET", K_MEMBERS, members[i], occ .. "|resolved|" .. rest)
          local origin = redis.call("HGET", K_DETAILS, "s:" .. members[i])
          if origin then labels[#labels + 1] = string.match(origin, "^[^|]*|(.*)$") end
        end
      end
    end
    redis.call("HSET", K_STATE, "firing", 0, "flapping", 0)
  end
  settle(0)  -- never reopened: the next firing opens a new ticket
  audit("CANCELLED")
  return reply("CANCELLED", labels)
end

if kind == "reopened" then
  redis.call("HSET", K_STATE, "desk_open", 1, "muted", 0)
  audit("RECORDED")
  return reply("RECORDED")
end

if kind == "assigned" and sync.assign == "acknowledge" and live and inc[5] ~= "1" then
  if redis.call("HSETNX", K_STATE, "acked:" .. epoch, now) == 1 then
    for _, source in ipairs(sources()) do upstream("ACK", source) end
    audit("ACKNOWLEDGE")
    return reply("ACKNOWLEDGE")
  end
end

if kind == "commented" and sync.comment == "upstream" and (live or state == "resolved") and text ~= "" then
  for _, source in ipairs(sources()) do upstream("COMMENT", source) end
  audit("COMMENT")
  return reply("COMMENT")
end

audit("RECORDED")
return reply("RECORDED")
