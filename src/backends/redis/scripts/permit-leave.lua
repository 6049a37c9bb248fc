-- permit-leave: a waiter gives up (timeout, abort, failure, close): out of the queue, units that
-- were handed to it meanwhile given back, and whoever it blocked served.
-- KEYS: H, Q, QA, F. ARGV: waiter id ('' for none), owner, the caller's wake-up channel. Returns
-- the wake-ups of the caller's own waiters as a JSON array.
local H, Q, QA, F = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = now_ms()
if ARGV[1] ~= '' then
  redis.call('LREM', Q, 0, ARGV[1])
  redis.call('HDEL', QA, ARGV[1])
end
redis.call('HDEL', H, ARGV[2])
local loc = { ch = ARGV[3] }
permit_serve(H, Q, QA, F, permit_purge(H, now), now, loc)
return local_wakeups(loc)
