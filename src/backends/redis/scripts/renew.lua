-- renew: extend the lease on every key if the owner still holds it. KEYS: L per key.
-- ARGV: owner, leaseMs. Returns 1, or 0 when the lease was lost on any key.
local owner, leaseMs = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
for i = 1, #KEYS do
  if not holds(KEYS[i], owner, now) then return 0 end
end
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], 'o:' .. owner, now + leaseMs)
  if redis.call('PTTL', KEYS[i]) < leaseMs then redis.call('PEXPIRE', KEYS[i], leaseMs) end
end
return 1
