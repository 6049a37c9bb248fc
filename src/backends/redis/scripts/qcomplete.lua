-- qcomplete: fenced completion with its effects in one step. KEYS: the queue's A, K, then the
-- document hashes. ARGV: the job's hash, its id, the claim's fence, the effects' envelope or ''.
-- Refused with reason "fence" (nothing written) unless the claim holds (active, this fence, not
-- expired on TIME); the effects' refusals leave the job as it was.
local A, K = KEYS[1], KEYS[2]
local J, id, fence = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local h = redis.call('HMGET', J, 's', 'f', 'x', 'k')
if h[1] ~= 'active' or h[2] ~= fence or tonumber(h[3]) <= now then
  return '{"ok":0,"reason":"fence","index":0,"detail":"the claim expired or the job was claimed again"}'
end
local reply = '{"ok":1,"docs":[],"results":[]}'
if ARGV[4] ~= '' then
  local env = cjson.decode(ARGV[4])
  local keyof = function(d) return KEYS[2 + d] end
  local held = write_gate(env, keyof)
  if held then return held end
  local applied
  reply, applied = run_batch(env, keyof)
  if env.q and not sfind(reply, '^{"ok":0,"stale"') then write_dequeue(env, keyof) end
  if not applied then return reply end
end
redis.call('DEL', J)
redis.call('ZREM', A, id)
if h[4] and redis.call('HGET', K, h[4]) == id then redis.call('HDEL', K, h[4]) end
return reply
