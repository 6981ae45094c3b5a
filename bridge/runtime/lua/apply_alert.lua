--[[ apply_alert.lua: dedupe + threshold + lifecycle + flap detection for one alert, atomically.

KEYS[1] incident state hash   (state, epoch, firing, opened_at, resolved_at, resolve_due, desk_open,
                               flapping, flips, last_change, ...)
KEYS[2] incident members hash (identity -> "occurrence|status|severity|seen ms|~marks|resource", the
                               "~marks|" part only once a follow-up was marked: older records lack it)
KEYS[3] incident outbox list  (desk actions, JSON, oldest first)
KEYS[4] incident audit list   (the milestones, JSON, newest first, capped: see `audit` below)
KEYS[5] incident changes list (the other decisions, JSON, newest first, capped)
KEYS[6] incident details hash (per member: "f:<identity>" its flap record "<0|1>|<change ms>,...",
                               "n:<identity>" its alert's name, for the notes timers write)
KEYS[7] pending units         (sorted set, while pending: each unit the threshold counts -> the newest
                               `seen` of its firing members; see "Threshold counting" below)
KEYS[8] pending members held  (sorted set, while pending: its members by unit and seen, all scores 0)

ARGV[1]  now (ms)                  ARGV[2]  incident base "<route>:<key hash>"
ARGV[3]  alert identity            ARGV[4]  status: firing | acknowledged | resolved
ARGV[5]  severity                  ARGV[6]  occurrence (ms of starts_at, else of arrival)
ARGV[7]  "1" when the source gave no start time (then a repeat while firing is not a re-fire)
ARGV[8]  alert JSON (copied into outbox entries for rendering)
ARGV[9]  route id
ARGV[10] flags, comma-separated: "suppressed" (a silence matched), "child" (a topology child on its own
         incident: `topology.hold` applies), "live" (placement found this incident live: should it have
         been adopted by its topology parent since, the reply is MOVED, to run the alert there)
ARGV[11] resource (for distinct-resource thresholds)
ARGV[12] policy JSON: {resolve_after, reopen_within, retention, audit_cap, auto_resolve_after,
         threshold = {count, distinct, window} | nil, flap = {changes, window, quiet} | nil,
         quiet = {severity, acknowledgement} | nil: changes the route does not note,
         desk, settings: the route's desk and settings hash, recorded when a ticket is opened}  (ms)
ARGV[13] mark: a short hash of the follow-up the route notes (an acknowledgement with its author and
         comment, a comment, flapping, downtime, the summary where asked), "" for none
ARGV[14] what the follow-up is (acknowledgement, comment, ..., summary)   ARGV[15] its note text
ARGV[16] "1" when the alert is a follow-up at all, noted by the route or not
ARGV[17] the alert's name (kept for members that timers may write about: flapping, auto-resolve)
ARGV[18] the member's auto-resolve window (ms; "0": none): its alert's route's, or the rule's that matched
         it, so one incident may hold members of sources that clear and of sources that never do
ARGV[19] the rendered correlation key (kept with a new incident, for humans: the note of an adoption)
ARGV[20] the alert's source (name in the mapping), or "" : where the loop back may need it, a member joining
         keeps its source and labels (taken from ARGV[8], at most 4 KB of them) as "s:<identity>" in KEYS[6]
         ("<source>|<labels JSON>"), for acknowledgements upstream and the silence of a cancelled ticket
         (apply_desk_event.lua, bridge/delivery/upstreams.py); the state's `srcs` lists its members' sources

The loop back (apply_desk_event.lua) may mark a live incident `muted`: a person resolved its ticket while
members still fired. Then later alerts are notes only (as always while live), and once every member has
cleared the incident settles as resolved at once, with no desk call (the desk resolved it already).

Returns {decision, incident_id, outbox length, reason, timers} where timers is a flat list
{kind, due, kind, due, ...} for the caller to add to the timers set (idempotently). For MOVED the
reason is the base of the incident to run the alert on instead (its topology parent's).

A member's versions are ordered by (occurrence, rank) with firing < acknowledged < resolved, so an
older occurrence or a late repeat can never undo a newer state: replays, HA double-sends and two
consumers racing on the same incident all converge. Follow-ups are told apart by their marks: the
member keeps the last few of its occurrence, so a follow-up not seen yet is news (a note, even when
its status is behind the member's: a comment after an acknowledgement), and a copy of one seen is a
repeat, in whatever order the copies come.

Cost, whatever the incident's size: the state (HMGET), this alert's member (HGET, HSET), a few counters,
at most one outbox entry (RPUSH) and one audit or changes entry (LPUSH; LTRIM drops at most one). While
the incident is pending, also its count (ZCOUNT) and a few O(log n) steps in KEYS[7..8], n being the
members it holds: at most 1,000 (threshold.count if larger), a new one beyond that taking the place of
one that does not change the count (`make_room`). Once each, bounded by that cap: DEL of a pending
incident whose members all cleared, UNLINK of KEYS[7..8] at its open. Once for an incident left pending
by an older version: its members are read (HGETALL) to index them.
]]
local K_STATE, K_MEMBERS, K_OUTBOX, K_AUDIT, K_CHANGES = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_DETAILS = KEYS[6]
local K_UNITS, K_HELD = KEYS[7], KEYS[8]
local now = tonumber(ARGV[1])
local base, identity, status, sev = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local occ, loose = tonumber(ARGV[6]), ARGV[7] == "1"
local alert_json, route, resource = ARGV[8], ARGV[9], ARGV[11]
local flags = "," .. (ARGV[10] or "") .. ","
local suppressed = string.find(flags, ",suppressed,", 1, true) ~= nil
local is_child, placed_live = string.find(flags, ",child,", 1, true) ~= nil, string.find(flags, ",live,", 1, true) ~= nil
local mark, followup, note_text, is_event = ARGV[13] or "", ARGV[14] or "", ARGV[15] or "", ARGV[16] == "1"
local alert_name = ARGV[17] or ""
local auto_arg = tonumber(ARGV[18] or "")
local key_text = ARGV[19] or ""
local source = ARGV[20] or ""
local RANK = {firing = 0, acknowledged = 1, resolved = 2}
local MARKS_KEPT = 4
local timers = {}

local inc = redis.call("HMGET", K_STATE, "state", "epoch", "firing", "resolved_at", "resolve_due",
  "desk_open", "flapping", "flips", "srcs", "muted")
local state, epoch = inc[1], inc[2]
local firing = tonumber(inc[3] or "0")
local resolved_at = tonumber(inc[4] or "0")
local flapping = tonumber(inc[7] or "0") > 0  -- members flapping now (older versions wrote 1 for any)

local function parse_member(value)
  if not value then return nil end
  local o, s, v, seen, marks, res = string.match(value, "^(%-?%d+)|(%a+)|(%a*)|(%d+)|~([%x,]*)|(.*)$")
  if not o then
    o, s, v, seen, res = string.match(value, "^(%-?%d+)|(%a+)|(%a*)|(%d+)|(.*)$")
    marks = ""
  end
  -- Unreadable (a start past the year 5138, as an older version wrote it: 2.5e+14): a firing member of
  -- unknown start, so that its next version replaces it and its clear still counts.
  if not o then return {occ = -1, status = "firing", sev = "", seen = 0, resource = "", marks = ""} end
  return {occ = tonumber(o), status = s, sev = v, seen = tonumber(seen), resource = res, marks = marks}
end
local prev = parse_member(redis.call("HGET", K_MEMBERS, identity))

-- 0a. An identical repeat of a member (the common case: an Alertmanager HA pair, repeat_interval): the
-- same occurrence, status and severity, no follow-up it has not seen, nothing to re-arm on the member
-- (no auto-resolve window). It changes nothing, and it is answered here, before the policy is decoded
-- and the rest of the step is set up; what step 1 below does for it, to the letter: the repeat counted,
-- the resolve timer re-armed for a replayed entry, the outbox length returned. Not while pending (the
-- threshold's index may be due to be built first) nor on a merged incident (MOVED, below).
if prev and occ == prev.occ and status == prev.status and sev == prev.sev and state ~= "pending"
    and state ~= "merged" and (mark == "" or string.find("," .. prev.marks .. ",", "," .. mark .. ",", 1, true))
    and auto_arg and (auto_arg <= 0 or status == "resolved") then
  if state == "resolving" then
    timers[1], timers[2] = "resolve", tonumber(inc[5] or "0")
  end
  if state then
    redis.call("HINCRBY", K_STATE, "repeats:repeat", 1)
    redis.call("HSET", K_STATE, "repeated_at", now)
  end
  return {"DUPLICATE", base .. ":" .. (epoch or ""), redis.call("LLEN", K_OUTBOX), "repeat", timers}
end

local policy = cjson.decode(ARGV[12])
local unnoted = policy.quiet or {}
local auto_after = auto_arg or policy.auto_resolve_after or 0
if auto_after <= 0 then auto_after = nil end

-- Threshold counting in constant work per alert, whatever the incident's size. While the incident is
-- pending, the members it holds are indexed in K_HELD, a sorted set read in its members' order (all
-- scores 0): "f|<length>:<unit>|<seen>|<identity>" for a firing (or acknowledged) member and
-- "t|<seen>|<identity>" for a cleared one, `seen` in 15 digits; the unit is what the threshold counts:
-- the member's resource (`distinct_resources`) or its identity. K_UNITS scores each unit with the newest
-- `seen` of its firing members, so the units fired within the window are one ZCOUNT. The state's
-- `pending_by` names the unit while the index is kept. A pending incident holds at most PENDING_CAP
-- members (threshold.count if that is larger): see `make_room` for whose place a new one takes.
local PENDING_CAP = 1000
local want_by = policy.threshold and (policy.threshold.distinct and "resource" or "identity") or nil
local pending_by = nil

local function unit_of(res, id)
  if pending_by == "resource" then return res end
  return id
end
local function unit_prefix(unit) return "f|" .. #unit .. ":" .. unit .. "|" end
local function unit_range(unit)
  local p = unit_prefix(unit)
  return "[" .. p, "(" .. string.sub(p, 1, -2) .. "}"
end
local function held_entry(st, seen, unit, id)
  if st == "resolved" then return "t|" .. string.format("%015d", seen) .. "|" .. id end
  return unit_prefix(unit) .. string.format("%015d", seen) .. "|" .. id
end

-- A unit's oldest (or newest) firing member, as its entry.
local function unit_member(unit, newest)
  local lo, hi = unit_range(unit)
  if newest then return redis.call("ZREVRANGEBYLEX", K_HELD, hi, lo, "LIMIT", 0, 1)[1] end
  return redis.call("ZRANGEBYLEX", K_HELD, lo, hi, "LIMIT", 0, 1)[1]
end

local function rescore(unit)
  local newest = unit_member(unit, true)
  if not newest then return redis.call("ZREM", K_UNITS, unit) end
  local at = #unit_prefix(unit)
  redis.call("ZADD", K_UNITS, tonumber(string.sub(newest, at + 1, at + 15)), unit)
end

-- A member the incident stops holding: forgotten, as if it had never come (a firing one no longer counts
-- in `firing`; its clear, should it come, is a clear of nothing). Counted in the state's `held_dropped`.
local function evict(entry)
  local id, unit = string.sub(entry, 19), nil
  if string.sub(entry, 1, 2) == "f|" then
    local digits = string.match(entry, "^f|(%d+):")
    local from, length = 4 + #digits, tonumber(digits)
    unit, id = string.sub(entry, from, from + length - 1), string.sub(entry, from + length + 17)
  end
  redis.call("ZREM", K_HELD, entry)
  redis.call("HDEL", K_MEMBERS, id)
  redis.call("HINCRBY", K_STATE, "held_dropped", 1)
  if unit then
    redis.call("HINCRBY", K_STATE, "firing", -1)
    rescore(unit)
  end
end

-- Room for one more member in a pending incident that holds its cap: the new one takes the place of,
-- in this order, the oldest cleared member; the oldest member of the unit that fired longest ago, if
-- that is outside the window; the oldest member of the alert's own unit; the oldest member of a unit
-- that has another. None of these changes the count. A clear of a member the incident does not hold
-- takes only a cleared one's place; without one it is not kept (returns false).
local function make_room(st)
  local cap = math.max(PENDING_CAP, policy.threshold.count)
  while redis.call("ZCARD", K_HELD) >= cap do
    local victim = redis.call("ZRANGEBYLEX", K_HELD, "[t|", "(t}", "LIMIT", 0, 1)[1]
    if not victim then
      if st == "resolved" then return false end
      local oldest = redis.call("ZRANGE", K_UNITS, 0, 0, "WITHSCORES")
      if oldest[1] and tonumber(oldest[2]) < now - policy.threshold.window then
        victim = unit_member(oldest[1], false)
      end
      victim = victim or unit_member(unit_of(resource, identity), false)
      if not victim then  -- fewer units than threshold.count are in the window: one of them has two
        for _, unit in ipairs(redis.call("ZREVRANGE", K_UNITS, 0, policy.threshold.count)) do
          local lo, hi = unit_range(unit)
          if redis.call("ZLEXCOUNT", K_HELD, lo, hi) > 1 then
            victim = unit_member(unit, false)
            break
          end
        end
      end
      victim = victim or (oldest[1] and unit_member(oldest[1], false)) or redis.call("ZRANGE", K_HELD, 0, 0)[1]
    end
    evict(victim)
  end
  return true
end

-- This alert's version of its member, in the index (set_member, while pending). False: not kept.
local function hold(st)
  local unit = unit_of(resource, identity)
  local entry, old, old_unit = held_entry(st, now, unit, identity), nil, nil
  if prev then
    old_unit = unit_of(prev.resource, identity)
    old = held_entry(prev.status, prev.seen, old_unit, identity)
    if old == entry then return true end
    if not redis.call("ZSCORE", K_HELD, old) then old = nil end  -- of an earlier epoch: not held
  end
  if not old and not make_room(st) then return false end
  redis.call("ZADD", K_HELD, 0, entry)  -- before the ZREM: the set never empties (its expiry stays)
  if old then redis.call("ZREM", K_HELD, old) end
  if st ~= "resolved" then rescore(unit) end
  if old and prev.status ~= "resolved" and (st == "resolved" or old_unit ~= unit) then rescore(old_unit) end
  return true
end

-- An incident left pending by an older version (no index), or whose route now counts another unit:
-- indexed from its members, once (the only read of every member). `pending_by` is "<unit>@<pending_since>":
-- an index of an earlier time pending is never taken for this one's.
if state == "pending" and want_by then
  local kept = redis.call("HMGET", K_STATE, "pending_by", "pending_since")
  local tag = want_by .. "@" .. (kept[2] or "")
  pending_by = want_by
  if kept[1] ~= tag then
    redis.call("DEL", K_UNITS, K_HELD)
    local all, newest = redis.call("HGETALL", K_MEMBERS), {}
    for i = 1, #all, 2 do
      local m = parse_member(all[i + 1])
      local unit = unit_of(m.resource, all[i])
      redis.call("ZADD", K_HELD, 0, held_entry(m.status, m.seen, unit, all[i]))
      if m.status ~= "resolved" and (newest[unit] or -1) < m.seen then newest[unit] = m.seen end
    end
    for unit, seen in pairs(newest) do redis.call("ZADD", K_UNITS, seen, unit) end
    redis.call("HSET", K_STATE, "pending_by", tag)
    local ttl = redis.call("PTTL", K_STATE)
    if ttl > 0 then
      redis.call("PEXPIRE", K_UNITS, ttl)
      redis.call("PEXPIRE", K_HELD, ttl)
    end
  end
end

local function has_mark(marks, m)
  return string.find("," .. marks .. ",", "," .. m .. ",", 1, true) ~= nil
end

-- The marks the member keeps: those of its current occurrence, this one added (a new occurrence
-- starts afresh). `fresh`: this alert is a follow-up the route notes that the member has not seen.
local same_occurrence, fresh, marks = false, mark ~= "", mark
if prev then
  same_occurrence = occ == prev.occ or (loose and status ~= "resolved" and prev.status ~= "resolved")
  if same_occurrence then
    fresh = mark ~= "" and not has_mark(prev.marks, mark)
    marks = prev.marks
    if fresh then
      local kept = {}
      for m in string.gmatch(marks, "%x+") do kept[#kept + 1] = m end
      kept[#kept + 1] = mark
      while #kept > MARKS_KEPT do table.remove(kept, 1) end
      marks = table.concat(kept, ",")
    end
  end
end

local function base36(n)
  local digits, out = "0123456789abcdefghijklmnopqrstuvwxyz", ""
  repeat
    local d = n % 36
    out = string.sub(digits, d + 1, d + 1) .. out
    n = math.floor(n / 36)
  until n == 0
  return out
end

local function incident_id() return base .. ":" .. (epoch or "") end

-- The audit trail keeps the story whatever the number of repeats. Milestones (opens, reopens, resolves;
-- delivery adds what the desk did) go to the audit list; the other decisions (notes, flapping, pending,
-- suppressed) to the changes list, whose oldest entries make room for new ones (counted in
-- `changes_dropped`); repeats are only counted (`repeats:<why>`); the first alert of an incident is
-- kept in `first`, whatever else comes.
local MILESTONE = {OPEN = true, REOPEN = true, RESOLVE_PENDING = true, RESOLVE = true}
local function audit(decision, reason)
  if decision == "DUPLICATE" then
    if state then
      redis.call("HINCRBY", K_STATE, "repeats:" .. string.match(reason, "^[^:]*"), 1)
      redis.call("HSET", K_STATE, "repeated_at", now)
    end
    return
  end
  local entry = cjson.encode({at = now, decision = decision, reason = reason, identity = identity,
    status = status, severity = sev, route = route, incident = incident_id()})
  if not inc[1] then redis.call("HSETNX", K_STATE, "first", entry) end
  if MILESTONE[decision] then
    redis.call("LPUSH", K_AUDIT, entry)
    redis.call("LTRIM", K_AUDIT, 0, policy.audit_cap - 1)
    return
  end
  local kept = redis.call("LPUSH", K_CHANGES, entry)
  if kept == 1 then  -- a new list lives as long as the incident's state
    local ttl = redis.call("PTTL", K_STATE)
    if ttl > 0 then redis.call("PEXPIRE", K_CHANGES, ttl) end
  end
  if kept > policy.audit_cap then
    redis.call("LTRIM", K_CHANGES, 0, policy.audit_cap - 1)
    if redis.call("EXISTS", K_STATE) == 1 then
      redis.call("HINCRBY", K_STATE, "changes_dropped", kept - policy.audit_cap)
    end
  end
end

-- `tag`: the follow-up a note is about (acknowledgement, comment, ...), for its text and the desk.
local function emit(kind, reason, tag)
  local extra = ""
  if tag and tag ~= "" then extra = ',"followup":' .. cjson.encode(tag) end
  redis.call("RPUSH", K_OUTBOX, '{"kind":' .. cjson.encode(kind) .. ',"incident":'
    .. cjson.encode(incident_id()) .. ',"epoch":' .. cjson.encode(epoch) .. ',"route":'
    .. cjson.encode(route) .. ',"at":' .. now .. ',"reason":' .. cjson.encode(reason) .. extra
    .. ',"alert":' .. alert_json .. '}')
  audit(kind, reason)
end

local function done(decision, reason)
  return {decision, incident_id(), redis.call("LLEN", K_OUTBOX), reason, timers}
end

local function arm(kind, due)
  timers[#timers + 1] = kind
  timers[#timers + 1] = due
end

local function set_member(st)
  if pending_by and not hold(st) then return end  -- pending: counted, and capped (`hold`)
  local kept = marks ~= "" and ("~" .. marks .. "|") or ""
  redis.call("HSET", K_MEMBERS, identity, occ .. "|" .. st .. "|" .. sev .. "|" .. now .. "|" .. kept .. resource)
  if source ~= "" and st ~= "resolved" and (not prev or prev.status == "resolved") then
    -- joining (or firing again): who it came from, for an acknowledgement upstream (bridge/sync)
    -- decoded only here, once per member joining: no cost for the repeats
    local ok, decoded = pcall(cjson.decode, alert_json)
    local labels = ok and type(decoded) == "table" and type(decoded.labels) == "table" and cjson.encode(decoded.labels) or ""
    if #labels > 4096 then labels = "" end
    redis.call("HSET", K_DETAILS, "s:" .. identity, source .. "|" .. labels)
    local srcs = inc[9] or ","
    if not string.find(srcs, "," .. source .. ",", 1, true) then
      inc[9] = srcs .. source .. ","
      redis.call("HSET", K_STATE, "srcs", inc[9])
    end
  end
  if st ~= "resolved" and auto_after then
    arm("auto@" .. auto_after .. ":" .. identity, now + auto_after)
    if alert_name ~= "" then redis.call("HSET", K_DETAILS, "n:" .. identity, alert_name) end
  end
end

-- A replayed entry must re-arm the timers its first run set (the timer ZADDs are the caller's).
local function rearm()
  if state == "resolving" then arm("resolve", tonumber(inc[5] or "0")) end
end

-- Flap detection is a member's: its own state changes (firing -> clear, clear or a new occurrence ->
-- firing) within the window; joining the incident is none. More than `changes` of them and the member
-- is flapping: one note, then its changes are not noted until it has been stable for `quiet` (a
-- "flap:<identity>" timer). `flapping` counts the incident's flapping members: while there are any,
-- the incident does not resolve (no resolve/reopen churn at the desk).
local function member_flapping()
  if not policy.flap or not flapping then return false end
  return string.sub(redis.call("HGET", K_DETAILS, "f:" .. identity) or "", 1, 1) == "1"
end

local function note_flip()
  if not policy.flap then return false end
  local record = redis.call("HGET", K_DETAILS, "f:" .. identity) or ""
  local was = string.sub(record, 1, 1) == "1"
  local kept = {}
  for t in string.gmatch(string.sub(record, 3), "%d+") do
    if tonumber(t) >= now - policy.flap.window then kept[#kept + 1] = t end
  end
  kept[#kept + 1] = tostring(now)
  while #kept > policy.flap.changes + 1 do table.remove(kept, 1) end
  local flag = (was or #kept > policy.flap.changes) and "1" or "0"
  redis.call("HSET", K_DETAILS, "f:" .. identity, flag .. "|" .. table.concat(kept, ","))
  if flag == "1" and alert_name ~= "" then redis.call("HSET", K_DETAILS, "n:" .. identity, alert_name) end
  redis.call("HSET", K_STATE, "last_change", now)
  if was then
    arm("flap:" .. identity, now + policy.flap.quiet)
    return true
  end
  if flag == "1" then
    flapping = true
    redis.call("HINCRBY", K_STATE, "flapping", 1)
    arm("flap:" .. identity, now + policy.flap.quiet)
    emit("NOTE", "flapping: " .. #kept .. " changes within the flap window; its changes are not noted until it is"
      .. " stable for the quiet period")
    return true
  end
  return false
end

-- 0. An incident its topology parent adopted ("merged": bridge/runtime/lua/adopt.lua). An alert placed
-- here because placement found it live, just before the adoption, goes to the parent: the engine runs it
-- there. Any other finds it as a resolved incident past its reopen window (its members are tombstones).
if state == "merged" and placed_live then
  return {"MOVED", incident_id(), redis.call("LLEN", K_OUTBOX), redis.call("HGET", K_STATE, "merged_into") or "",
    timers}
end

-- 1. Dedupe: an identical repeat, or an older version of this member, changes nothing.
if prev then
  local older = occ < prev.occ or (occ == prev.occ and RANK[status] < RANK[prev.status])
  if older and fresh and occ == prev.occ and prev.status ~= "resolved" then
    -- A follow-up of the current problem whose status is behind the member's (a comment or the end of
    -- a downtime after an acknowledgement): news all the same; the member keeps its status.
    status, older = prev.status, false
  end
  if older then
    rearm()
    audit("DUPLICATE", "stale: an older state of this alert")
    return done("DUPLICATE", "stale")
  end
  if same_occurrence and status == prev.status and not fresh and (sev == prev.sev or unnoted.severity) then
    local reason = sev == prev.sev and "repeat" or "severity change the route does not note"
    if sev ~= prev.sev or (auto_after and status ~= "resolved") then
      set_member(status)  -- the source repeats the alert: it is not stale yet
    end
    rearm()
    audit("DUPLICATE", reason)
    return done("DUPLICATE", reason)
  end
end
local live = state == "open" or state == "resolving"
local was_active = prev and prev.status ~= "resolved" and (live or state == "pending")

-- 2. A clear.
if status == "resolved" then
  set_member("resolved")
  if not was_active then
    -- Nothing open for it: keep the tombstone so a late copy of its firing stays stale.
    if not state or state == "resolved" then redis.call("PEXPIRE", K_MEMBERS, policy.retention) end
    audit("DUPLICATE", "clear without open member")
    rearm()
    return done("DUPLICATE", "clear without open member")
  end
  firing = redis.call("HINCRBY", K_STATE, "firing", -1)
  if state == "pending" then
    if firing <= 0 then redis.call("DEL", K_STATE, K_MEMBERS, K_UNITS, K_HELD) end
    audit("PENDING", "member cleared before the threshold")
    return done("PENDING", "member cleared before the threshold")
  end
  local quiet = note_flip()
  if firing <= 0 and state == "open" and inc[10] == "1" then
    -- Muted by the loop back: a person resolved the ticket while members fired; now all are clear, it
    -- settles as resolved without a desk call.
    redis.call("HSET", K_STATE, "state", "resolved", "resolved_at", now, "resolve_due", 0, "changed_at", now,
      "desk_open", 0, "muted", 0, "flapping", 0)
    audit("RESOLVE", "all members clear; the desk had resolved the ticket (muted until clear)")
    for _, key in ipairs(KEYS) do redis.call("PEXPIRE", key, policy.retention) end
    return done("RESOLVE", "all members clear; resolved at the desk before")
  end
  if firing <= 0 and state == "open" and not flapping then
    local due = now + policy.resolve_after
    redis.call("HSET", K_STATE, "state", "resolving", "resolve_due", due, "changed_at", now)
    arm("resolve", due)
    audit("RESOLVE_PENDING", "all members clear")
    return done("RESOLVE_PENDING", "all members clear")
  end
  redis.call("HSET", K_STATE, "changed_at", now)
  if quiet then
    audit("FLAPPING", "member resolved while flapping")
    return done("FLAPPING", "member resolved while flapping")
  end
  emit("NOTE", "member resolved")
  return done("NOTE", "member resolved")
end

-- 3. An acknowledgement (or a downtime starting) with nothing open opens nothing.
if status == "acknowledged" and not was_active and not live then
  audit("DUPLICATE", "acknowledged with nothing open")
  return done("DUPLICATE", "acknowledged with nothing open")
end

-- 3b. Firing (or acknowledged) under a silence: recorded, not acted on, unless it is already open.
-- The member is not stored: once the silence ends, the next repeat opens as a first firing would.
if suppressed and not was_active then
  if not state or state == "suppressed" then
    redis.call("HSET", K_STATE, "state", "suppressed", "route", route, "changed_at", now)
    redis.call("PEXPIRE", K_STATE, policy.retention)
    redis.call("PEXPIRE", K_AUDIT, policy.retention)
  end
  audit("SUPPRESSED", "silenced")
  return done("SUPPRESSED", "silenced")
end

-- 4. Firing into a live incident: a note (or silence while flapping). A follow-up's note says what
-- it is (`Acknowledged by alice: on it`); a status change that comes with a follow-up the route does
-- not note, or an acknowledgement or severity change it does not note, is recorded without one.
if live then
  set_member(status)
  local reason, tag = nil, fresh and followup or ""
  if not was_active then
    firing = redis.call("HINCRBY", K_STATE, "firing", 1)
    reason = prev and "re-fired" or "new member"
    if fresh then reason = reason .. ": " .. note_text end
  elseif occ > prev.occ and not loose then
    reason = "re-fired"
    if fresh then reason = reason .. ": " .. note_text end
  else
    local parts = {}
    if fresh then
      parts[1] = note_text
    elseif status ~= prev.status and not is_event and not (status == "acknowledged" and unnoted.acknowledgement) then
      parts[1] = status
      if status == "acknowledged" then tag = "acknowledgement" end
    end
    if sev ~= prev.sev and not unnoted.severity then parts[#parts + 1] = "severity " .. prev.sev .. " -> " .. sev end
    if #parts == 0 then
      audit("DUPLICATE", status .. ": not a change the route notes")
      return done("DUPLICATE", "not noted")
    end
    reason = table.concat(parts, "; ")
  end
  -- A change of this member's state (not its joining): cleared before, or a new occurrence.
  local flipped = prev ~= nil and (not was_active or (occ > prev.occ and not loose))
  local quiet_flap = flipped and note_flip() or member_flapping()
  if state == "resolving" then
    redis.call("HSET", K_STATE, "state", "open", "resolve_due", 0)
    reason = reason .. " during hold-down"
  end
  redis.call("HSET", K_STATE, "changed_at", now)
  if quiet_flap and not fresh then
    audit("FLAPPING", reason .. " while flapping")
    return done("FLAPPING", reason .. " while flapping")
  end
  emit("NOTE", reason, tag)
  return done("NOTE", reason)
end

for _, key in ipairs(KEYS) do redis.call("PERSIST", key) end

-- 5. Fires again within the reopen window: reopen (unless flapping keeps it quiet).
if state == "resolved" and policy.reopen_within > 0 and now - resolved_at <= policy.reopen_within then
  set_member(status)
  redis.call("HSET", K_STATE, "state", "open", "firing", 1, "resolve_due", 0, "changed_at", now)
  if prev and note_flip() then
    audit("FLAPPING", "fired again while flapping")
    return done("FLAPPING", "fired again while flapping")
  end
  redis.call("HINCRBY", K_STATE, "reopened", 1)
  redis.call("HSET", K_STATE, "desk_open", 1)
  emit("REOPEN", "fired again within the reopen window")
  return done("REOPEN", "fired again within the reopen window")
end

-- 6a. A topology child waits `topology.hold` before its ticket opens, pending: a parent that comes
-- meanwhile adopts it before any ticket exists (a "hold" timer opens it otherwise, with this alert).
if policy.hold and is_child and state ~= "pending" then
  redis.call("HSET", K_STATE, "state", "pending", "firing", 0, "route", route, "pending_since", now,
    "hold_until", now + policy.hold, "held_alert", alert_json, "key", key_text)
  state, firing, was_active = "pending", 0, false
  arm("hold", now + policy.hold)
end

-- 6. Nothing live: hold until the threshold is met, if the route has one.
-- Members of an earlier epoch are all clear; they stay as tombstones so late copies stay stale.
if policy.threshold and state ~= "pending" then
  redis.call("HSET", K_STATE, "state", "pending", "firing", 0, "route", route, "pending_since", now)
  state, firing, was_active = "pending", 0, false
end
if policy.threshold and not pending_by then  -- pending from this alert on: a fresh index
  pending_by = want_by
  redis.call("DEL", K_UNITS, K_HELD)
  redis.call("HSET", K_STATE, "pending_by", want_by .. "@" .. now)  -- as pending_since
  redis.call("HDEL", K_STATE, "held_dropped")
end
set_member(status)
if not was_active then firing = redis.call("HINCRBY", K_STATE, "firing", 1) end
if policy.threshold then
  local count = redis.call("ZCOUNT", K_UNITS, now - policy.threshold.window, "+inf")
  redis.call("HSET", K_STATE, "pending_count", count)
  if count < policy.threshold.count then
    -- Held alerts that never reach the threshold fade away with the window.
    redis.call("PEXPIRE", K_STATE, policy.threshold.window * 2 + 60000)
    redis.call("PEXPIRE", K_MEMBERS, policy.threshold.window * 2 + 60000)
    redis.call("PEXPIRE", K_UNITS, policy.threshold.window * 2 + 60000)
    redis.call("PEXPIRE", K_HELD, policy.threshold.window * 2 + 60000)
    audit("PENDING", count .. " of " .. policy.threshold.count .. " within the threshold window")
    return done("PENDING", count .. " of " .. policy.threshold.count)
  end
end

if state == "pending" and policy.hold then
  local hold_until = tonumber(redis.call("HGET", K_STATE, "hold_until") or "0")
  if now < hold_until then
    audit("PENDING", "held for its topology parent (topology.hold)")
    return done("PENDING", "held for its topology parent")
  end
end

-- 7. A new epoch: its own ticket, its own correlation id.
local reason = (state == "resolved" and "fired after the reopen window")
  or (state == "merged" and "fired again after its topology parent adopted it")
  or (state == "pending" and policy.hold and "no topology parent came within topology.hold")
  or (state == "pending" and ("threshold reached: " .. firing .. " alerts")) or "first firing member"
epoch = base36(now)
if epoch == inc[2] then epoch = base36(now + 1) end
if state == "resolved" or state == "merged" then firing = 1 end
redis.call("HSET", K_STATE, "state", "open", "epoch", epoch, "firing", firing, "opened_at", now,
  "resolve_due", 0, "resolved_at", 0, "changed_at", now, "route", route, "reopened", 0,
  "desk_open", 1, "flapping", 0, "flips", "", "desk", policy.desk or "", "settings", policy.settings or "")
redis.call("HDEL", K_STATE, "pending_since", "pending_count", "hold_until", "held_alert", "merged_into", "muted")
redis.call("HSET", K_DETAILS, "open_alert", alert_json)  -- what a new ticket for this incident is made of
if key_text ~= "" then redis.call("HSET", K_STATE, "key", key_text) end
redis.call("HDEL", K_STATE, "pending_by")
redis.call("UNLINK", K_UNITS, K_HELD)  -- counted no more; its members stay members
emit("OPEN", reason)
return done("OPEN", reason)
