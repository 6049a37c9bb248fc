-- qread: a job, or a queue's counts, by the server clock. KEYS: the queue's R, D, A, F.
-- ARGV: 'get' and the job's hash, or 'stats'. get replies the job as JSON ('null' when gone);
-- stats replies [waiting, delayed, active, failed] (an expired claim counts as waiting, or as
-- failed when it was the last attempt).
local R, D, A, F = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = now_ms()
if ARGV[1] == 'get' then
  local h = redis.call('HMGET', ARGV[2], 's', 'p', 'r', 'a', 'f', 'm', 'k', 'e', 'x', 'd')
  if not h[1] then return 'null' end
  return '{"s":' .. enc_str(h[1]) .. ',"p":' .. h[2] .. ',"r":' .. h[3] .. ',"a":' .. h[4] .. ',"f":' .. h[5] ..
    ',"m":' .. h[6] .. ',"k":' .. (h[7] and enc_str(h[7]) or 'null') .. ',"e":' .. (h[8] and enc_str(h[8]) or 'null') ..
    ',"x":' .. (h[9] or 0) .. ',"now":' .. now .. ',"d":' .. h[10] .. '}'
end
local expired = redis.call('ZRANGEBYSCORE', A, '-inf', now)
local activeLive = redis.call('ZCARD', A) - #expired
local lastExpired = 0
for _, id in ipairs(expired) do
  -- the jobs' hash prefix is ARGV[2]
  local h = redis.call('HMGET', ARGV[2] .. id, 'a', 'm')
  if h[1] and tonumber(h[1]) >= tonumber(h[2]) then lastExpired = lastExpired + 1 end
end
local due = redis.call('ZCOUNT', D, '-inf', now)
local waiting = redis.call('ZCARD', R) + due + #expired - lastExpired
local delayed = redis.call('ZCARD', D) - due
return { waiting, delayed, activeLive, redis.call('SCARD', F) + lastExpired }
