-- acquire: take a lease on every key at once, or queue (FIFO) and report when to look again.
-- KEYS: per key (L, Q, QA, B, F). ARGV: owner, waiter id ('' = not queued), mode, leaseMs,
-- enqueue ('1'/'0'), waiter ttl ms, wake channel.
local owner, wid, mode = ARGV[1], ARGV[2], ARGV[3]
local leaseMs, enqueue, ttl, ch = tonumber(ARGV[4]), ARGV[5] == '1', tonumber(ARGV[6]), ARGV[7]
local n = #KEYS / 5
local now = now_ms()
local function reply_held()
  local fences, docs = {}, {}
  for i = 0, n - 1 do
    local b = i * 5
    fences[i + 1] = redis.call('HGET', KEYS[b + 1], 'f:' .. owner)
    docs[i + 1] = doc_json(KEYS[b + 4])
  end
  return '{"ok":1,"fences":[' .. tconcat(fences, ',') .. '],"docs":[' .. tconcat(docs, ',') .. ']}'
end
-- Already handed to us by a release (its wake-up message may have been lost)?
if wid ~= '' and n == 1 and holds(KEYS[1], owner, now) then return reply_held() end
local ok, retry = true, nil
for i = 0, n - 1 do
  local b = i * 5
  local g, r = grantable(KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], wid, mode, now)
  if not g then
    ok = false
    if r and (not retry or r < retry) then retry = r end
  end
end
if ok then
  for i = 0, n - 1 do
    local b = i * 5
    grant(KEYS[b + 1], owner, mode, leaseMs, now, KEYS[b + 5])
    if wid ~= '' and redis.call('HDEL', KEYS[b + 3], wid) == 1 then
      redis.call('LREM', KEYS[b + 2], 0, wid)
    end
  end
  return reply_held()
end
if enqueue then
  local entry = mode .. '|' .. (now + ttl) .. '|' .. ch .. '|' .. owner .. '|' .. leaseMs .. '|' .. n
  for i = 0, n - 1 do
    local b = i * 5
    if redis.call('HSET', KEYS[b + 3], wid, entry) == 1 then redis.call('RPUSH', KEYS[b + 2], wid) end
    redis.call('PEXPIRE', KEYS[b + 2], ttl * 3)
    redis.call('PEXPIRE', KEYS[b + 3], ttl * 3)
  end
end
return '{"ok":0,"retry":' .. (retry or -1) .. '}'
