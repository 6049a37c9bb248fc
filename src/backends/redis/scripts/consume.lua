-- consume: rate-limit consumptions and a write batch in ONE atomic step (see "Rate limits" in
-- src/store/backend.ts). KEYS: the batch's document hashes (ARGV[2] of them), then the limit
-- keys (a sliding window has two, a token bucket one). ARGV[1]: the batch envelope (as
-- write.lua), or '' without a batch; ARGV[2]: how many document keys; then five per consumption:
-- 's' (sliding window) | 'b' (token bucket), limit, windowMs, cost, '1' | '0' (record).
-- Storage, all on the server's clock (TIME, ms with microseconds):
--   sliding window: K[k] a list of "<t>|<cost>" entries, oldest first (at most `limit`), and
--   K[k+1] the string "<used>|<latest t>"; both expire `windowMs` after the latest entry.
--   token bucket: K[k] a hash { tk = tokens, at = t }, expiring when the bucket is full again.
-- Reply: the batch's reply as write.lua gives it when the batch waits for a lease ("locked",
-- nothing evaluated); else "<admissions>\n<batch reply>", admissions a JSON array of
-- [allowed 0|1, remaining, retryAfterMs, resetMs], and the batch reply "L" when a recording
-- consumption was refused (nothing written, nothing recorded).
-- Globals looked up once: in a function library every global access goes through a guard.
local rcall, tonumber, ipairs = redis.call, tonumber, ipairs
local batch = ARGV[1] ~= ''
local env = batch and cjson.decode(ARGV[1]) or nil
local keyof = function(d) return KEYS[d] end
local rl, k = {}, tonumber(ARGV[2]) + 1
for i = 3, #ARGV, 5 do
  local c = { a = ARGV[i], l = tonumber(ARGV[i + 1]), w = tonumber(ARGV[i + 2]),
    c = tonumber(ARGV[i + 3]), r = ARGV[i + 4] == '1', k = k }
  k = k + (c.a == 'b' and 1 or 2)
  rl[#rl + 1] = c
end
if batch then
  local held = write_gate(env, keyof)
  if held then return held end
end
local tm = rcall('TIME')
local now = tonumber(tm[1]) * 1000 + tonumber(tm[2]) / 1000
local EPS = 1e-9
local function up(ms)
  if ms <= EPS then return 0 end
  return ceil(ms - EPS)
end
local function num(x) return sformat('%.17g', x) end

-- Each consumption evaluated: { allowed, avail, retry, reset_after (recorded), reset (not), rec }
local evals, ok = {}, true
for i, c in ipairs(rl) do
  local ev
  if c.a == 'b' then
    local H = KEYS[c.k]
    local h = rcall('HMGET', H, 'tk', 'at')
    local t, tokens = now, c.l
    if h[1] then
      local at = tonumber(h[2])
      if at > t then t = at end
      tokens = tonumber(h[1]) + (t - at) * c.l / c.w
      if tokens > c.l then tokens = c.l end
    end
    local allowed = c.c <= tokens + EPS
    local after = tokens - c.c
    if after < 0 then after = 0 end
    local retry = 0
    if not allowed then
      retry = up((c.c - tokens) * c.w / c.l)
      if retry < 1 then retry = 1 end
    end
    ev = {
      allowed = allowed, avail = tokens, after = after, retry = retry,
      reset = up((c.l - tokens) * c.w / c.l), reset_after = up((c.l - after) * c.w / c.l),
      rec = function()
        rcall('HSET', H, 'tk', num(after), 'at', num(t))
        rcall('PEXPIRE', H, up((c.l - after) * c.w / c.l) + 1)
      end,
    }
  else
    local L, M = KEYS[c.k], KEYS[c.k + 1]
    local m = rcall('GET', M)
    local used, last, t, trimmed = 0, nil, now, false
    if m then
      local bar = sfind(m, '|', 1, true)
      used, last = tonumber(ssub(m, 1, bar - 1)), tonumber(ssub(m, bar + 1))
      if last > t then t = last end
      -- Drop the entries that left the window (t - windowMs, t].
      local from = t - c.w
      local chunk = 4
      while true do
        local heads = rcall('LRANGE', L, 0, chunk - 1)
        local n = 0
        for j, e in ipairs(heads) do
          local b = sfind(e, '|', 1, true)
          if tonumber(ssub(e, 1, b - 1)) > from then break end
          used = used - tonumber(ssub(e, b + 1))
          n = j
        end
        if n > 0 then
          rcall('LTRIM', L, n, -1)
          trimmed = true
        end
        if n < chunk then break end
        chunk = 64
      end
    end
    local avail = c.l - used
    local allowed = c.c <= avail
    local retry = 0
    if not allowed then
      -- The call passes once enough of the oldest entries have left the window.
      local need, from, found = used + c.c - c.l, 0, nil
      while not found do
        local es = rcall('LRANGE', L, from, from + 63)
        if #es == 0 then break end
        for _, e in ipairs(es) do
          local b = sfind(e, '|', 1, true)
          need = need - tonumber(ssub(e, b + 1))
          if need <= 0 then
            found = tonumber(ssub(e, 1, b - 1))
            break
          end
        end
        from = from + 64
      end
      retry = found and up(found + c.w - t) or c.w
      if retry < 1 then retry = 1 end
    end
    local reset = 0
    if used > 0 and last then reset = up(last + c.w - t) end
    ev = {
      allowed = allowed, avail = avail, after = avail - c.c, retry = retry, reset = reset,
      reset_after = c.w,
      -- Not recorded after a trim: the running sum must follow the list.
      fix = trimmed and function()
        if used > 0 then rcall('SET', M, used .. '|' .. num(last), 'KEEPTTL')
        else rcall('DEL', M) end
      end,
      rec = function()
        rcall('RPUSH', L, num(t) .. '|' .. c.c)
        rcall('PEXPIRE', L, c.w + 1)
        rcall('SET', M, (used + c.c) .. '|' .. num(t), 'PX', c.w + 1)
      end,
    }
  end
  evals[i] = ev
  if c.r and not ev.allowed then ok = false end
end

local reply, applied = 'L', false
if ok then
  if batch then
    reply, applied = run_batch(env, keyof)
    if env.q and not sfind(reply, '^{"ok":0,"stale"') then write_dequeue(env, keyof) end
  else
    reply, applied = '{"ok":1,"docs":[],"results":[]}', true
  end
end
local out = {}
for i, c in ipairs(rl) do
  local ev = evals[i]
  local recorded = applied and c.r and ev.allowed
  if recorded then ev.rec() elseif ev.fix then ev.fix() end
  local rem = recorded and ev.after or ev.avail
  out[i] = '[' .. (ev.allowed and 1 or 0) .. ',' .. floor(rem + EPS) .. ',' .. ev.retry .. ',' ..
    (recorded and ev.reset_after or ev.reset) .. ']'
end
return '[' .. tconcat(out, ',') .. ']\n' .. reply
