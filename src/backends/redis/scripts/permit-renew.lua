-- permit-renew: push a live owner's expiry. KEYS: H. ARGV: owner, ms, how ('renew': to now + ms
-- unless it is already later, so a renewal never shortens an extend(); 'extend': to now + ms).
-- Returns 1, or 0 when the owner no longer holds (expired, released, never granted).
local H, owner, ms = KEYS[1], ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local v = redis.call('HGET', H, owner)
if not v then return 0 end
local e, w, f = permit_holder(v)
if e <= now then return 0 end
local exp = now + ms
if ARGV[3] == 'renew' and e > exp then return 1 end
redis.call('HSET', H, owner, sformat('%.0f %d %s', exp, w, f))
if redis.call('PTTL', H) < ms then redis.call('PEXPIRE', H, ms) end
return 1
