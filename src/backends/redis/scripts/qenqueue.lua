-- qenqueue: create jobs, alone or with a write batch (both, or neither). KEYS: per queue of the
-- request its R, D, A, K, F, N (id counter) and wake-up channel, then the document hashes.
-- ARGV: the queue count, the jobs JSON ([{q = queue index (1-based), p = priority text, r = run
-- at or false, dl = delay ms, m = max attempts, k = key or false, d = data text}]), the jobs'
-- hash prefix per queue (JSON list), the write envelope or ''. Reply: the batch's reply with
-- "jobs": [[id, created 1|0], ...] when applied.
local nq = tonumber(ARGV[1])
local jobs = cjson.decode(ARGV[2])
local prefixes = cjson.decode(ARGV[3])
local base = nq * 7
local reply = '{"ok":1,"docs":[],"results":[]}'
if ARGV[4] ~= '' then
  local env = cjson.decode(ARGV[4])
  local keyof = function(d) return KEYS[base + d] end
  local held = write_gate(env, keyof)
  if held then return held end
  local applied
  reply, applied = run_batch(env, keyof)
  if env.q and not sfind(reply, '^{"ok":0,"stale"') then write_dequeue(env, keyof) end
  if not applied then return reply end
end
local now = now_ms()
local out, woke = {}, {}
for i, j in ipairs(jobs) do
  local b = (j.q - 1) * 7
  local R, D, K, N = KEYS[b + 1], KEYS[b + 2], KEYS[b + 4], KEYS[b + 6]
  local existing = j.k and redis.call('HGET', K, j.k)
  if existing then
    out[i] = '[' .. enc_str(existing) .. ',0]'
  else
    local id = tostring(redis.call('INCR', N))
    local runAt = j.r or (now + j.dl)
    runAt = math.ceil(runAt)
    local fields = { 's', 'pending', 'p', j.p, 'r', sformat('%d', runAt), 'a', 0, 'f', 0, 'm', j.m, 'd', j.d }
    if j.k then
      fields[#fields + 1] = 'k'
      fields[#fields + 1] = j.k
      redis.call('HSET', K, j.k, id)
    end
    redis.call('HSET', prefixes[j.q] .. id, unpack(fields))
    if runAt <= now then
      redis.call('ZADD', R, j.p, sformat('%016d|%016d', runAt, tonumber(id)))
    else
      redis.call('ZADD', D, runAt, id)
    end
    woke[j.q] = (woke[j.q] or 0) + 1
    out[i] = '[' .. enc_str(id) .. ',1]'
  end
end
for q, n in pairs(woke) do redis.call('PUBLISH', KEYS[(q - 1) * 7 + 7], tostring(n)) end
return '{"jobs":[' .. tconcat(out, ',') .. '],' .. ssub(reply, 2)
