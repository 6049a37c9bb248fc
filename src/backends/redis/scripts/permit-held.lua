-- permit-held: units of a pool held by live (unexpired, server clock) holders; writes nothing.
-- KEYS: H.
local h = redis.call('HGETALL', KEYS[1])
local now = now_ms()
local used = 0
for i = 1, #h, 2 do
  if h[i] ~= 'n' then
    local e, w = permit_holder(h[i + 1])
    if e > now then used = used + w end
  end
end
return used
