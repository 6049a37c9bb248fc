-- release: drop the owner from every lease hash and hand the lease to the next waiters.
-- KEYS: per key (L, Q, QA, B, F). ARGV: owner, the caller's wake-up channel. Returns "1" when
-- the owner still held the lease on every key (live "o:" entry on the server clock), "0" when it
-- had lost it on any key, followed by the wake-ups of the caller's own waiters (see serve in
-- lib.lua) as a JSON array.
local now = now_ms()
local loc = { ch = ARGV[2] }
local held = '1'
for i = 0, #KEYS / 5 - 1 do
  if not holds(KEYS[i * 5 + 1], ARGV[1], now) then held = '0' end
end
for i = 0, #KEYS / 5 - 1 do
  local b = i * 5
  release_owner(KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 4], KEYS[b + 5], ARGV[1], now, loc)
end
return held .. local_wakeups(loc)
