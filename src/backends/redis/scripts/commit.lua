-- commit: verify the lease still holds on every key (fencing), run the batch, release.
-- KEYS: per lease key (L, Q, QA, B, F), then the document hashes. ARGV: owner, lease key count,
-- envelope, the caller's wake-up channel. Waiters of the caller's own process that the release
-- serves come back in the reply as "grants" (see serve in lib.lua) instead of by pub/sub.
local owner, n = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local loc = { ch = ARGV[4] }
local function release_all()
  for j = 0, n - 1 do
    local b = j * 5
    release_owner(KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 4], KEYS[b + 5], owner, now, loc)
  end
end
local function with_grants(reply)
  if #loc == 0 then return reply end
  return '{"grants":' .. local_wakeups(loc) .. ',' .. ssub(reply, 2)
end
for i = 0, n - 1 do
  if not holds(KEYS[i * 5 + 1], owner, now) then
    release_all()
    return with_grants('{"ok":0,"reason":"fence","index":0,"detail":"the lease expired or was taken over before the commit"}')
  end
end
local env = cjson.decode(ARGV[3])
local base = 5 * n
local reply, applied, byKey = run_batch(env, function(d) return KEYS[base + d] end)
if sfind(reply, '^{"ok":0,"stale"') then return reply end
if applied and not env.nd then
  -- The hand-off below sends the committed documents without reading them back.
  loc.docs = {}
  for d, j in pairs(byKey) do loc.docs[KEYS[base + d]] = j end
end
release_all()
return with_grants(reply)
