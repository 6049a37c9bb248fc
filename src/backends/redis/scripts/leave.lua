-- leave: a waiter gives up (timeout, abort); remove it from every queue, drop a lease that was
-- handed to it meanwhile, and serve whoever it blocked. KEYS: per key (L, Q, QA, B, F).
-- ARGV: waiter id, owner.
local now = now_ms()
for i = 0, #KEYS / 5 - 1 do
  local b = i * 5
  local L, Q, QA = KEYS[b + 1], KEYS[b + 2], KEYS[b + 3]
  redis.call('LREM', Q, 0, ARGV[1])
  redis.call('HDEL', QA, ARGV[1])
  redis.call('HDEL', L, 'o:' .. ARGV[2], 'f:' .. ARGV[2])
  wake(L, Q, QA, KEYS[b + 4], KEYS[b + 5], now)
end
return 1
