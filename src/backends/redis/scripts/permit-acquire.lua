-- permit-acquire: take `weight` units of a pool, or queue (FIFO) and say when to look again.
-- KEYS: H, Q, QA, F (see permit-lib.lua). ARGV: owner, waiter id ('' = nowait: never queued),
-- weight, permits, leaseMs, waiter ttl ms, wake channel.
-- Replies '{"ok":1,"fences":[<fence>],"docs":[]}' (granted), '{"ok":0,"retry":<ms or -1>}'
-- (queued, or busy with nowait: look again after retry ms at the latest, -1: only when woken), or
-- '{"ok":0,"permits":<n>}' (the pool is in use with another capacity: nothing done).
local owner, wid = ARGV[1], ARGV[2]
local weight, permits, leaseMs = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl, ch = tonumber(ARGV[6]), ARGV[7]
local H, Q, QA, F = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = now_ms()
if wid ~= '' then
  -- Already handed to us by a release (its wake-up may have been lost)?
  local v = redis.call('HGET', H, owner)
  if v then
    local e, _, f = permit_holder(v)
    if e > now then return permit_grant_json(f) end
  end
end
local used, cap, soonest = permit_purge(H, now)
local head = permit_head(Q, QA, now)
if not cap and head then cap = head.permits end
if cap and cap ~= permits then return '{"ok":0,"permits":' .. cap .. '}' end
-- Room freed by a silent expiry goes to the queue first (ourselves included, if queued).
if head then
  local loc = { self = wid ~= '' and wid or nil }
  used, head = permit_serve(H, Q, QA, F, used, now, loc, head)
  if loc.mine then return permit_grant_json(loc.mine) end
end
-- Nobody queued (or our own entry lapsed): take the units if they fit.
if not head and used + weight <= permits then
  if wid ~= '' then redis.call('HDEL', QA, wid) end
  return permit_grant_json(permit_grant(H, F, owner, weight, permits, leaseMs, now))
end
local retry = soonest and soonest - now or -1
if wid == '' then return '{"ok":0,"retry":' .. retry .. '}' end
-- Queue (or refresh our entry: the waiter's heartbeat).
local entry = weight .. '|' .. (now + ttl) .. '|' .. ch .. '|' .. owner .. '|' .. leaseMs .. '|' .. permits
if redis.call('HSET', QA, wid, entry) == 1 then redis.call('RPUSH', Q, wid) end
redis.call('PEXPIRE', Q, ttl * 3)
redis.call('PEXPIRE', QA, ttl * 3)
-- A head that is not us may be a waiter that died: look again when its entry lapses.
if head and head.id ~= wid and (retry < 0 or head.exp - now < retry) then retry = head.exp - now end
return '{"ok":0,"retry":' .. retry .. '}'
