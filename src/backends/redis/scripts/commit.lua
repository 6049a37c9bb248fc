-- commit: verify the lease still holds on every key (fencing), run the batch, release.
-- KEYS: per lease key (L, Q, QA, B, F), then the document hashes. ARGV: owner, lease key count,
-- envelope ('' when the short form follows), the caller's wake-up channel, then (one key only,
-- optional) the short form of the commit (see fast_commit). Waiters of the caller's own process
-- that the release serves come back in the reply as "grants" (see serve in lib.lua) instead of
-- by pub/sub.
local owner, n = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local loc = { ch = ARGV[4] }
-- One key: the lease is ours while L has our live "o:" entry, and ours alone when L holds
-- nothing else than "m" and our "o:"/"f:" pair (then the release is a plain hand-off, see
-- release_owner; a lease with leftovers of expired owners takes the general release).
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
  local exp = tonumber(redis.call('HGET', KEYS[1], 'o:' .. owner))
  held = exp ~= nil and exp > now
  -- Only a holder may take the short release: it deletes the lease hash.
  sole = held and redis.call('HLEN', KEYS[1]) == 3
else
  for i = 0, n - 1 do
    if not holds(KEYS[i * 5 + 1], owner, now) then held = false end
  end
end
if not held then
  release_all()
  return with_grants('{"ok":0,"reason":"fence","index":0,"detail":"the lease expired or was taken over before the commit"}')
end
local base = 5 * n
-- The common lock commit, without loading the document or decoding the envelope: one patch of
-- set/unset ops on distinct fields that the client predicted exactly on the document as last
-- written by a known token, sent positionally (ARGV[5] = the batch token, [6] = the token the
-- prediction started from, [7] = fieldsUnchangedSince or '', [8] = the incarnation or '', then
-- per op 's'|'u', the field literal, the value's JSON or ''). When that token is still the last
-- writer, everything the general path would check is known: the document exists, nobody wrote
-- it since the prediction's base, the client's schema check saw the true post-image. Only
-- fieldsUnchangedSince needs the fields' versions (one HMGET). Returns the new version and the
-- incarnation, or nil, having written nothing, to take the general path (the document moved:
-- that path then answers "stale" or refuses).
local function fast_commit(B)
  local nops = (#ARGV - 8) / 3
  local fields = { '_v', '_w', '_c', '_r' }
  for i = 1, nops do fields[4 + i] = '^' .. ARGV[7 + 3 * i] end
  local h = redis.call('HMGET', B, unpack(fields))
  if not h[1] or h[2] ~= ARGV[6] then return nil end
  local version, inc = tonumber(h[1]), h[3] or ''
  local fs = tonumber(ARGV[7])
  if fs then
    if version < fs or (ARGV[8] ~= '' and ARGV[8] ~= inc) then return nil end
    local replacedAt = tonumber(h[4] or 0)
    for i = 1, nops do
      local fv = tonumber(h[4 + i] or 0)
      if replacedAt > fv then fv = replacedAt end
      if fv > fs then return nil end
    end
  end
  version = version + 1
  local sets, m, dels = { '_v', version, '_w', ARGV[5] }, 4, nil
  for i = 1, nops do
    local b = 6 + 3 * i
    local f = ARGV[b + 1]
    if ARGV[b] == 's' then
      sets[m + 1] = f
      sets[m + 2] = ARGV[b + 2]
      m = m + 2
    else
      dels = dels or {}
      dels[#dels + 1] = f
    end
    sets[m + 1] = '^' .. f
    sets[m + 2] = version
    m = m + 2
  end
  if dels then redis.call('HDEL', B, unpack(dels)) end
  redis.call('HSET', B, unpack(sets))
  return version, inc
end
if n == 1 and ARGV[5] then
  local B = KEYS[base + 1]
  local version, inc = fast_commit(B)
  if version then
    local t = ARGV[5]
    -- The reply, without the document's fields (the caller has them): compact when it says
    -- only that, "x|<version>|<token>|<incarnation>", plus "|<waiter id>|<fence>" per grant to
    -- a waiter of the caller's process (its document: the same); JSON with "x" otherwise.
    local function doc_j()
      return '{"v":' .. version .. ',"w":' .. enc_str(t) .. ',"c":' .. enc_str(inc) .. ',"f":{}}'
    end
    local compact = not sfind(t, '|', 1, true) and not sfind(inc, '|', 1, true)
    local j
    if compact then
      loc.pdocs = { [B] = true }
      loc.cg = {}
    else
      j = doc_j()
      loc.pdocs = { [B] = j }
    end
    release_all()
    if compact and #loc == 0 then
      if #loc.cg == 0 then return 'x|' .. version .. '|' .. t .. '|' .. inc end
      return 'x|' .. version .. '|' .. t .. '|' .. inc .. '|' .. tconcat(loc.cg, '|')
    end
    j = j or doc_j()
    -- Other wake-ups of the caller's process came too (rare): all of it as JSON.
    local cg = loc.cg or {}
    for i = 1, #cg, 2 do
      loc[#loc + 1] = '["' .. cg[i] .. '",{"ok":1,"fences":[' .. cg[i + 1] .. '],"docs":[' .. j .. '],"p":1}]'
    end
    local nops = (#ARGV - 8) / 3
    return with_grants('{"ok":1,"x":1,"docs":[' .. j .. '],"results":[[' .. srep('null,', nops - 1) .. 'null]]}')
  end
end
-- The short form came without the envelope (the caller expected the fast path): nothing was
-- written, the lease is still held; ask for the envelope.
if ARGV[3] == '' then return 'e' end
local env = cjson.decode(ARGV[3])
local reply, applied, byKey = run_batch(env, function(d) return KEYS[base + d] end)
if sfind(reply, '^{"ok":0,"stale"') then return reply end
if applied and not env.nd then
  -- The hand-off below sends the committed documents without reading them back.
  loc.docs = {}
  for d, j in pairs(byKey) do loc.docs[KEYS[base + d]] = j end
end
release_all()
return with_grants(reply)
