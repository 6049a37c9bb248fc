-- commit: verify the lease still holds on every key (fencing), run the batch, release.
-- KEYS: per lease key (L, Q, QA, B, F), then the document hashes. ARGV: owner, lease key count,
-- envelope, the caller's wake-up channel. Waiters of the caller's own process that the release
-- serves come back in the reply as "grants" (see serve in lib.lua) instead of by pub/sub.
local owner, n = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local loc = { ch = ARGV[4] }
-- With one key, the lease hash is read once (lease_state): the holds check, and whether we are
-- its only owner (then the release is a plain hand-off, see release_owner).
local sole = false
local function release_all()
  for j = 0, n - 1 do
    local b = j * 5
    release_owner(KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 4], KEYS[b + 5], owner, now, loc, sole)
  end
end
local function with_grants(reply)
  if #loc == 0 then return reply end
  return '{"grants":' .. local_wakeups(loc) .. ',' .. ssub(reply, 2)
end
local held = true
if n == 1 then
  local owners, count = lease_state(KEYS[1], now)
  held = owners[owner] ~= nil
  -- Only a holder may take the short release: it deletes the lease hash.
  sole = held and count == 1
else
  for i = 0, n - 1 do
    if not holds(KEYS[i * 5 + 1], owner, now) then held = false end
  end
end
if not held then
  release_all()
  return with_grants('{"ok":0,"reason":"fence","index":0,"detail":"the lease expired or was taken over before the commit"}')
end
local env = cjson.decode(ARGV[3])
local base = 5 * n
-- The common lock commit, without loading the document: one patch of set/unset ops that the
-- client predicted exactly (env.x) on the document as last written by token ck.t. When that is
-- still the last writer, everything the general path would check is known: the document exists,
-- nobody wrote it since the prediction's base, the client's schema check saw the true
-- post-image. Only fieldsUnchangedSince needs the fields' versions (one HMGET). Answers like the
-- general path with "x" and without the document's fields; a grant to a waiter of the caller's
-- process carries the document the same way (loc.pdocs, "p"). Returns nil to take the general
-- path (anything else, or the document moved: that path then answers "stale" or refuses).
local function fast_commit(B)
  local w = env.w[1]
  if #env.w ~= 1 or w.k ~= 'patch' or w.g or w.ev or w.ei or w.vb or not w.ck or w.ck.ok ~= true then
    return nil
  end
  local fields = { '_v', '_w', '_c', '_r' }
  for i, op in ipairs(w.ops) do
    if op.o ~= 'set' and op.o ~= 'unset' then return nil end
    fields[4 + i] = '^' .. op.f
  end
  local h = redis.call('HMGET', B, unpack(fields))
  if not h[1] or h[2] ~= w.ck.t then return nil end
  local version, inc = tonumber(h[1]), h[3] or ''
  if w.fs then
    if version < w.fs or (w.inc and w.inc ~= inc) then return nil end
    local replacedAt = tonumber(h[4] or 0)
    for i = 1, #w.ops do
      local fv = tonumber(h[4 + i] or 0)
      if replacedAt > fv then fv = replacedAt end
      if fv > w.fs then return nil end
    end
  end
  version = version + 1
  local final, order, rs = {}, {}, {}
  for i, op in ipairs(w.ops) do
    if final[op.f] == nil then order[#order + 1] = op.f end
    final[op.f] = op.o == 'set' and op.v or false
    rs[i] = 'null'
  end
  local sets, n, dels = { '_v', version, '_w', env.t }, 4, {}
  for _, f in ipairs(order) do
    local v = final[f]
    if v then sets[n + 1] = f; sets[n + 2] = v; n = n + 2 else dels[#dels + 1] = f end
    sets[n + 1] = '^' .. f; sets[n + 2] = version; n = n + 2
  end
  if #dels > 0 then redis.call('HDEL', B, unpack(dels)) end
  redis.call('HSET', B, unpack(sets))
  local j = '{"v":' .. version .. ',"w":' .. enc_str(env.t) .. ',"c":' .. enc_str(inc) .. ',"f":{}}'
  loc.pdocs = { [B] = j }
  return '{"ok":1,"x":1,"docs":[' .. j .. '],"results":[[' .. tconcat(rs, ',') .. ']]}'
end
if env.x and n == 1 then
  local reply = fast_commit(KEYS[base + 1])
  if reply then
    release_all()
    return with_grants(reply)
  end
end
local reply, applied, byKey = run_batch(env, function(d) return KEYS[base + d] end)
if sfind(reply, '^{"ok":0,"stale"') then return reply end
if applied and not env.nd then
  -- The hand-off below sends the committed documents without reading them back.
  loc.docs = {}
  for d, j in pairs(byKey) do loc.docs[KEYS[base + d]] = j end
end
release_all()
return with_grants(reply)
