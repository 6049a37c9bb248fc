-- Named permit pools (mutex, rwlock, semaphore): helpers of the permit-*.lua entry scripts,
-- loaded after lib.lua (it uses now_ms, next_fence and local_wakeups from there).
--
-- One pool (kind, name) lives at P = "<prefix>:{!<kind>:<name>}" (the "!" keeps it apart from
-- every document, whose hash tag starts with its model name), in four keys of P's hash tag, hence
-- one Cluster slot:
--   P..":h"  holders: "n" = the pool's capacity (permits), "<owner>" = "<expiry> <weight> <fence>"
--            (expiry in ms, server clock); PEXPIREd to its latest holder's expiry, deleted when
--            the last live holder goes;
--   P..":q"  the FIFO wait queue: waiter ids;
--   P..":qa" waiter id -> "<weight>|<expiry>|<channel>|<owner>|<leaseMs>|<permits>"; a waiter
--            refreshes its expiry (its heartbeat) every few seconds, a dead waiter's entry lapses;
--   P..":f"  the fence counter (next_fence: a TTL, re-seeded from the clock, strictly increasing).
-- Rule kept by every script that changes a pool: afterwards, the head of the queue does not fit
-- in the units left (otherwise it was granted, by a hand-off). Only a silent expiry (a holder
-- that stopped renewing) breaks it, until the next script on the pool runs (a waiter's fallback
-- timer is set to the earliest expiry).

-- A holder's "<expiry> <weight> <fence>": expiry and weight as numbers, the fence as text.
local function permit_holder(v)
  local e, w, f = string.match(v, '^(%d+) (%d+) (%d+)$')
  return tonumber(e), tonumber(w), f
end

-- Drops the expired holders of H; returns (units held by live holders, the pool's capacity or
-- nil, the earliest live expiry or nil). Deletes H when nobody holds.
local function permit_purge(H, now)
  local h = redis.call('HGETALL', H)
  if #h == 0 then return 0, nil, nil end
  local used, cap, soonest, dead = 0, nil, nil, {}
  for i = 1, #h, 2 do
    local k = h[i]
    if k == 'n' then
      cap = tonumber(h[i + 1])
    else
      local e, w = permit_holder(h[i + 1])
      if e <= now then
        dead[#dead + 1] = k
      else
        used = used + w
        if not soonest or e < soonest then soonest = e end
      end
    end
  end
  if used == 0 then
    redis.call('DEL', H)
    return 0, nil, nil
  end
  if #dead > 0 then redis.call('HDEL', H, unpack(dead)) end
  return used, cap, soonest
end

local function permit_waiter(s)
  if not s then return nil end
  local w, e, ch, owner, lease, n = string.match(s, '^(%d+)|(%d+)|([^|]*)|([^|]*)|(%d+)|(%d+)$')
  if not w then return nil end
  return {
    weight = tonumber(w), exp = tonumber(e), ch = ch, owner = owner, lease = tonumber(lease),
    permits = tonumber(n),
  }
end

-- The live head of the queue (dead entries at its head are dropped), or nil.
local function permit_head(Q, QA, now)
  while true do
    local id = redis.call('LINDEX', Q, 0)
    if not id then return nil end
    local w = permit_waiter(redis.call('HGET', QA, id))
    if w and w.exp > now then
      w.id = id
      return w
    end
    redis.call('LPOP', Q)
    redis.call('HDEL', QA, id)
  end
end

-- Grants `weight` units to `owner` until now + leaseMs; returns the fence (text).
local function permit_grant(H, F, owner, weight, permits, leaseMs, now)
  local fence = next_fence(F)
  redis.call('HSET', H, 'n', permits, owner, sformat('%.0f %d %s', now + leaseMs, weight, fence))
  if redis.call('PTTL', H) < leaseMs then redis.call('PEXPIRE', H, leaseMs) end
  return fence
end

-- A grant as the waiter reads it (the Grant of wakeups.ts: one fence, no documents).
local function permit_grant_json(fence)
  return '{"ok":1,"fences":[' .. fence .. '],"docs":[]}'
end

-- Hands units to the head of the queue while it fits (FIFO: never past a head that does not).
-- `used`: units held now. Each waiter served is told by pub/sub, or, when it waits on the
-- caller's channel (loc.ch), in loc for the script's reply; loc.self (a waiter id) is the caller
-- itself: its grant goes to loc.mine. Returns the units held afterwards and the live head left
-- (which does not fit), or nil. `head`: the live head, when the caller just looked it up.
local function permit_serve(H, Q, QA, F, used, now, loc, head)
  local w = head
  while true do
    w = w or permit_head(Q, QA, now)
    if not w or used + w.weight > w.permits then return used, w end
    redis.call('LPOP', Q)
    redis.call('HDEL', QA, w.id)
    local fence = permit_grant(H, F, w.owner, w.weight, w.permits, w.lease, now)
    used = used + w.weight
    if loc and loc.self == w.id then
      loc.mine = fence
    elseif loc and loc.ch == w.ch then
      loc[#loc + 1] = '["' .. w.id .. '",' .. permit_grant_json(fence) .. ']'
    else
      redis.call('PUBLISH', w.ch, w.id .. ' ' .. permit_grant_json(fence))
    end
    w = nil
  end
end
