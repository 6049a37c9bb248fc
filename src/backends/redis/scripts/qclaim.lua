-- qclaim: claim the next due job of a queue. KEYS: the queue's R (ready zset: score priority,
-- member "<run at>|<id>", both zero-padded), D (delayed zset by run at), A (active zset by
-- expiry), K (key -> id of its live job), F (failed ids). ARGV: lease ms, the jobs' hash prefix.
-- Due delayed jobs move to R; expired claims go back to R, or fail on their last attempt.
-- Reply: the job as JSON (its data as stored), or '{"wait":<ms until the next due/expiry>}'.
local R, D, A, K, F = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local lease, JP = tonumber(ARGV[1]), ARGV[2]
local now = now_ms()
local function member(id, runAt) return sformat('%016d|%016d', runAt, tonumber(id)) end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', D, '-inf', now, 'LIMIT', 0, 256)) do
  redis.call('ZREM', D, id)
  local h = redis.call('HMGET', JP .. id, 'p', 'r')
  if h[1] then redis.call('ZADD', R, h[1], member(id, tonumber(h[2]))) end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', A, '-inf', now, 'LIMIT', 0, 256)) do
  redis.call('ZREM', A, id)
  local J = JP .. id
  local h = redis.call('HMGET', J, 'a', 'm', 'k', 'p', 'r')
  if h[1] then
    if tonumber(h[1]) >= tonumber(h[2]) then
      redis.call('HSET', J, 's', 'failed', 'e', 'the lease expired on the last attempt')
      redis.call('SADD', F, id)
      if h[3] and redis.call('HGET', K, h[3]) == id then redis.call('HDEL', K, h[3]) end
    else
      redis.call('HSET', J, 's', 'pending')
      redis.call('ZADD', R, h[4], member(id, tonumber(h[5])))
    end
  end
end
while true do
  local top = redis.call('ZPOPMIN', R)
  if #top == 0 then break end
  local id = tostring(tonumber(ssub(top[1], 18)))
  local J = JP .. id
  if redis.call('HGET', J, 's') == 'pending' then
    local a = redis.call('HINCRBY', J, 'a', 1)
    local f = redis.call('HINCRBY', J, 'f', 1)
    local x = now + lease
    redis.call('HSET', J, 's', 'active', 'x', x)
    redis.call('ZADD', A, x, id)
    local h = redis.call('HMGET', J, 'p', 'r', 'm', 'k', 'e', 'd')
    return '{"id":' .. enc_str(id) .. ',"p":' .. h[1] .. ',"r":' .. h[2] .. ',"a":' .. a .. ',"f":' .. f ..
      ',"m":' .. h[3] .. ',"k":' .. (h[4] and enc_str(h[4]) or 'null') .. ',"e":' .. (h[5] and enc_str(h[5]) or 'null') ..
      ',"now":' .. now .. ',"d":' .. h[6] .. '}'
  end
end
local wait = nil
local d = redis.call('ZRANGE', D, 0, 0, 'WITHSCORES')
if #d > 0 then wait = tonumber(d[2]) - now end
local a = redis.call('ZRANGE', A, 0, 0, 'WITHSCORES')
if #a > 0 and (not wait or tonumber(a[2]) - now < wait) then wait = tonumber(a[2]) - now end
if wait then return '{"wait":' .. math.max(0, wait) .. '}' end
return '{"wait":null}'
