-- release: drop the owner from every lease hash and hand the lease to the next waiters.
-- KEYS: per key (L, Q, QA, B, F). ARGV: owner.
local now = now_ms()
for i = 0, #KEYS / 5 - 1 do
  local b = i * 5
  release_owner(KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 4], KEYS[b + 5], ARGV[1], now)
end
return 1
