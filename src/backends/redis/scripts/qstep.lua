-- qstep: the fenced steps without effects, and the dead letter's retry. KEYS: the queue's R, D,
-- A, K, F, wake-up channel. ARGV: the step ('retry' | 'fail' | 'extend' | 'revive'), the job's
-- hash, its id, the claim's fence (revive: ''), then retry: delay ms, error or ''; fail: error;
-- extend: ms. Reply 1 when done, 0 when the claim no longer holds (revive: not failed, or its
-- key has a live job).
local R, D, A, K, F, W = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local step, J, id, fence = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = now_ms()
local h = redis.call('HMGET', J, 's', 'f', 'x', 'k', 'p', 'a', 'm')
if not h[1] then return 0 end
local function back(runAt)
  redis.call('HSET', J, 's', 'pending', 'r', sformat('%d', runAt))
  if runAt <= now then
    redis.call('ZADD', R, h[5], sformat('%016d|%016d', runAt, tonumber(id)))
  else
    redis.call('ZADD', D, runAt, id)
  end
  redis.call('PUBLISH', W, '1')
end
if step == 'revive' then
  local expiredLast = h[1] == 'active' and tonumber(h[3]) <= now and tonumber(h[6]) >= tonumber(h[7])
  if h[1] ~= 'failed' and not expiredLast then return 0 end
  if h[4] then
    if redis.call('HEXISTS', K, h[4]) == 1 and redis.call('HGET', K, h[4]) ~= id then return 0 end
    redis.call('HSET', K, h[4], id)
  end
  if expiredLast then
    redis.call('ZREM', A, id)
    redis.call('HSET', J, 'e', 'the lease expired on the last attempt')
  end
  redis.call('SREM', F, id)
  redis.call('HSET', J, 'a', 0)
  back(now)
  return 1
end
if h[1] ~= 'active' or h[2] ~= fence or tonumber(h[3]) <= now then return 0 end
if step == 'extend' then
  local x = now + tonumber(ARGV[5])
  redis.call('HSET', J, 'x', x)
  redis.call('ZADD', A, x, id)
  return 1
end
redis.call('ZREM', A, id)
if step == 'retry' then
  if ARGV[6] ~= '' then redis.call('HSET', J, 'e', ARGV[6]) end
  back(now + math.ceil(tonumber(ARGV[5])))
  return 1
end
-- fail
redis.call('HSET', J, 's', 'failed', 'e', ARGV[5])
redis.call('SADD', F, id)
if h[4] and redis.call('HGET', K, h[4]) == id then redis.call('HDEL', K, h[4]) end
return 1
