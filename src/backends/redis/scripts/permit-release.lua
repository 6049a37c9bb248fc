-- permit-release: give an owner's units back and hand them to the waiters they admit.
-- KEYS: H, Q, QA, F. ARGV: owner, the caller's wake-up channel. Returns "1" when the owner still
-- held its units (live entry, server clock), "0" when it had lost them, followed by the wake-ups
-- of the caller's own waiters as a JSON array (see permit_serve).
local H, Q, QA, F = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = now_ms()
local held = '0'
local v = redis.call('HGET', H, ARGV[1])
if v then
  if permit_holder(v) > now then held = '1' end
  redis.call('HDEL', H, ARGV[1])
end
local loc = { ch = ARGV[2] }
permit_serve(H, Q, QA, F, permit_purge(H, now), now, loc)
return held .. local_wakeups(loc)
