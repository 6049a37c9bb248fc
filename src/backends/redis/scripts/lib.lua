-- Lockstep Redis backend: shared library, prepended to every entry script (see ../scripts.ts).
--
-- Storage (no modules): one hash per document at B = "<prefix>:{<model>:<key>}" with
--   "_v" = version, "_w" = token of the batch that wrote it last, "_r" = version of the last
--   create/put, "_c" = token of the batch that created it (its incarnation), one field per
--   top-level data field, named by the field's JSON string literal (e.g. "\"balance\"") and
--   holding the field's JSON text, and "^" .. literal = the version that last wrote that field.
--   B..":f" is the fence counter (with a TTL, see next_fence); B..":l:<action>" the lease hash, B..":q:<action>" /
--   ":qa:<action>" its FIFO wait queue. All share B's hash tag, hence one Cluster slot.
--
-- JSON: cjson only decodes the envelope (its decoder is exact). Values are decoded by our own
-- parser, which keeps [] apart from {} and object key order, and re-encoded with the shortest of
-- %.15g/%.16g/%.17g that round-trips, so numbers come back exactly as JavaScript computed them.

-- Standard functions, bound by bind_globals() before an entry runs: a function library (FUNCTION
-- LOAD) is loaded with no globals in reach, and its upvalues then live on between calls.
local sfind, ssub, sbyte, schar, sformat, sgsub, srep, tconcat, floor, ceil
local function bind_globals()
  sfind, ssub, sbyte, schar, sformat, sgsub, srep = string.find, string.sub, string.byte, string.char,
    string.format, string.gsub, string.rep
  tconcat, floor, ceil = table.concat, math.floor, math.ceil
end

local NULL = {}
local ABSENT = {}
local ARR = {}
local OBJ = {}

local function new_arr() return setmetatable({}, ARR) end
local function new_obj() return setmetatable({ keys = {}, map = {} }, OBJ) end
local function is_arr(v) return type(v) == 'table' and getmetatable(v) == ARR end
local function is_obj(v) return type(v) == 'table' and getmetatable(v) == OBJ end

-- ---------------------------------------------------------------------------------- decoding
local function ws(s, i)
  local _, e = sfind(s, '^[ \t\r\n]*', i)
  return e + 1
end

local function utf8char(c)
  if c < 0x80 then return schar(c) end
  if c < 0x800 then return schar(0xC0 + floor(c / 64), 0x80 + c % 64) end
  if c < 0x10000 then
    return schar(0xE0 + floor(c / 4096), 0x80 + floor(c / 64) % 64, 0x80 + c % 64)
  end
  return schar(0xF0 + floor(c / 262144), 0x80 + floor(c / 4096) % 64, 0x80 + floor(c / 64) % 64,
    0x80 + c % 64)
end

local ESC = { ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t' }

local function dec_string(s, i)
  local parts, n, pos = {}, 0, i + 1
  while true do
    local j = sfind(s, '["\\]', pos)
    if not j then error('lockstep: malformed JSON string') end
    if j > pos then n = n + 1; parts[n] = ssub(s, pos, j - 1) end
    if ssub(s, j, j) == '"' then return tconcat(parts), j + 1 end
    local e = ssub(s, j + 1, j + 1)
    if e == 'u' then
      local cp = tonumber(ssub(s, j + 2, j + 5), 16)
      pos = j + 6
      if cp >= 0xD800 and cp <= 0xDBFF and ssub(s, pos, pos + 1) == '\\u' then
        local lo = tonumber(ssub(s, pos + 2, pos + 5), 16)
        if lo and lo >= 0xDC00 and lo <= 0xDFFF then
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
          pos = pos + 6
        end
      end
      n = n + 1; parts[n] = utf8char(cp)
    else
      n = n + 1; parts[n] = ESC[e]
      pos = j + 2
    end
  end
end

local decode_at
decode_at = function(s, i)
  i = ws(s, i)
  local c = ssub(s, i, i)
  if c == '"' then return dec_string(s, i) end
  if c == '{' then
    local o = new_obj()
    local keys, map = o.keys, o.map
    i = ws(s, i + 1)
    if ssub(s, i, i) == '}' then return o, i + 1 end
    while true do
      local k, v
      k, i = dec_string(s, ws(s, i))
      i = ws(s, i) + 1 -- ':'
      v, i = decode_at(s, i)
      if map[k] == nil then keys[#keys + 1] = k end
      map[k] = v
      i = ws(s, i)
      local d = ssub(s, i, i)
      i = i + 1
      if d == '}' then return o, i end
    end
  end
  if c == '[' then
    local a, n = new_arr(), 0
    i = ws(s, i + 1)
    if ssub(s, i, i) == ']' then return a, i + 1 end
    while true do
      local v
      v, i = decode_at(s, i)
      n = n + 1; a[n] = v
      i = ws(s, i)
      local d = ssub(s, i, i)
      i = i + 1
      if d == ']' then return a, i end
    end
  end
  if c == 't' then return true, i + 4 end
  if c == 'f' then return false, i + 5 end
  if c == 'n' then return NULL, i + 4 end
  local a, e = sfind(s, '^-?[0-9.eE+-]+', i)
  if not a then error('lockstep: malformed JSON at ' .. i) end
  return tonumber(ssub(s, a, e)), e + 1
end

local function decode(s)
  local v = decode_at(s, 1)
  return v
end

-- ---------------------------------------------------------------------------------- encoding
local function fmtnum(x)
  if x ~= x or x == math.huge or x == -math.huge then return nil end
  if x == 0 then return '0' end
  for p = 15, 17 do
    local s = sformat('%.' .. p .. 'g', x)
    if tonumber(s) == x then return s end
  end
  return sformat('%.17g', x)
end

local CTRL = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
local function ctrl(c)
  return CTRL[c] or sformat('\\u%04x', sbyte(c))
end

local function lone_surrogate(b)
  local b1, b2, b3 = sbyte(b, 1, 3)
  return sformat('\\u%04x', (b1 - 224) * 4096 + (b2 - 128) * 64 + (b3 - 128))
end

local function enc_str(s)
  if sfind(s, '[%c"\\\237]') then
    s = sgsub(s, '[%c"\\]', ctrl)
    s = sgsub(s, '\237[\160-\191][\128-\191]', lone_surrogate)
  end
  return '"' .. s .. '"'
end

local encode
encode = function(v)
  local t = type(v)
  if t == 'string' then return enc_str(v) end
  if t == 'number' then return fmtnum(v) end
  if t == 'boolean' then return v and 'true' or 'false' end
  if v == NULL then return 'null' end
  local parts = {}
  if getmetatable(v) == ARR then
    for i = 1, #v do parts[i] = encode(v[i]) end
    return '[' .. tconcat(parts, ',') .. ']'
  end
  for i, k in ipairs(v.keys) do parts[i] = enc_str(k) .. ':' .. encode(v.map[k]) end
  return '{' .. tconcat(parts, ',') .. '}'
end

-- Deep JSON equality, object key order ignored.
local deq
deq = function(a, b)
  if a == b then return true end
  if type(a) ~= 'table' or type(b) ~= 'table' then return false end
  local ma = getmetatable(a)
  if ma ~= getmetatable(b) or ma == nil then return false end
  if ma == ARR then
    local n = #a
    if n ~= #b then return false end
    for i = 1, n do
      if not deq(a[i], b[i]) then return false end
    end
    return true
  end
  if #a.keys ~= #b.keys then return false end
  for _, k in ipairs(a.keys) do
    local bv = b.map[k]
    if bv == nil or not deq(a.map[k], bv) then return false end
  end
  return true
end

-- Length in UTF-16 code units, as JavaScript counts.
local function utf16len(s)
  local _, cont = sgsub(s, '[\128-\191]', '')
  local _, four = sgsub(s, '[\240-\247]', '')
  return #s - cont + four
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
end

-- ---------------------------------------------------------------------------- document state
-- st: { key, exists, version, token0, replacedAt, inc, base = {lit -> json text} (as loaded),
--       order = {lit...}, fvs = {lit -> version}, raw = {lit -> json text | false},
--       val = {lit -> value}, dirty, touched, fresh, replaced, deleted, existed0 }
-- One HGETALL loads everything: meta fields, data fields ("\"name\"") and field versions
-- ("^\"name\""), so a write costs two redis.call()s: HGETALL and HSET.
local function load_doc(B)
  local h = redis.call('HGETALL', B)
  local st = {
    key = B, exists = false, version = 0, token0 = '', replacedAt = 0, inc = '', base = {},
    order = {}, fvs = {}, raw = {}, val = {}, dirty = {}, touched = {}, replaced = false,
    deleted = false,
  }
  local base, order = st.base, st.order
  for i = 1, #h, 2 do
    local k, v = h[i], h[i + 1]
    local c = sbyte(k, 1)
    if c == 34 then
      base[k] = v
      order[#order + 1] = k
    elseif c == 94 then st.fvs[ssub(k, 2)] = tonumber(v)
    elseif k == '_v' then st.version = tonumber(v); st.exists = true
    elseif k == '_w' then st.token0 = v
    elseif k == '_r' then st.replacedAt = tonumber(v)
    elseif k == '_c' then st.inc = v end
  end
  st.existed0 = st.exists
  st.fresh = not st.exists
  return st
end

local function getraw(st, f)
  local r = st.raw[f]
  if r ~= nil then return r end
  local v = st.val[f]
  if v ~= nil then
    if v == ABSENT then r = false else r = encode(v) end
  elseif st.fresh then
    r = false
  else
    r = st.base[f] or false
  end
  st.raw[f] = r
  return r
end

local function getv(st, f)
  local v = st.val[f]
  if v ~= nil then return v end
  local r = getraw(st, f)
  if r then v = decode(r) else v = ABSENT end
  st.val[f] = v
  return v
end

local function setraw(st, f, r)
  st.raw[f] = r
  st.val[f] = nil
  st.dirty[f] = true
end

local function setv(st, f, v)
  st.val[f] = v
  st.raw[f] = nil
  st.dirty[f] = true
end

local function replace_all(st, data)
  st.raw, st.val, st.dirty, st.touched, st.fvs = {}, {}, {}, {}, {}
  st.fresh, st.replaced, st.deleted, st.exists = true, true, false, true
  for f, r in pairs(data) do
    st.raw[f] = r
    st.dirty[f] = true
  end
end

-- ------------------------------------------------------------------------------------- guards
local function guard_ok(st, g)
  local v = getv(st, g.f)
  local kind = g.g
  if kind == 'exists' then return (v ~= ABSENT) == g.v end
  if kind == 'cmp' then
    local x = v
    if g.l then
      if v == ABSENT then x = 0
      elseif type(v) == 'string' then x = utf16len(v)
      elseif is_arr(v) then x = #v
      else x = ABSENT end
    end
    local c = g.c
    if x == ABSENT then return c == 'ne' end
    local want
    if g.r then
      -- The right-hand side is another field of the document (FieldRef), its pre-image value or
      -- length; missing (or a length of neither a string nor an array) counts as on the left.
      want = getv(st, g.r)
      if g.rl then
        if want == ABSENT then want = 0
        elseif type(want) == 'string' then want = utf16len(want)
        elseif is_arr(want) then want = #want
        else want = ABSENT end
      end
      if want == ABSENT then return c == 'ne' end
    else
      want = decode(g.v)
    end
    if c == 'eq' then return deq(x, want) end
    if c == 'ne' then return not deq(x, want) end
    if type(x) ~= 'number' or type(want) ~= 'number' then return false end
    if c == 'lt' then return x < want end
    if c == 'lte' then return x <= want end
    if c == 'gt' then return x > want end
    if c == 'gte' then return x >= want end
    return false
  end
  -- contains / notContains
  local found = false
  if v ~= ABSENT then
    local want = decode(g.v)
    if is_arr(v) then
      for i = 1, #v do
        if deq(v[i], want) then found = true; break end
      end
    elseif is_obj(v) then
      found = type(want) == 'string' and v.map[want] ~= nil
    elseif type(v) == 'string' then
      found = type(want) == 'string' and sfind(v, want, 1, true) ~= nil
    end
  end
  if kind == 'contains' then return found end
  return not found
end

-- ---------------------------------------------------------------------------------------- ops
local function kind_of(v)
  if v == NULL then return 'null' end
  if is_arr(v) then return 'array' end
  if is_obj(v) then return 'object' end
  return type(v)
end

local function get_arr(st, f, create)
  local v = getv(st, f)
  if v == ABSENT then
    if not create then return nil end
    return new_arr()
  end
  if not is_arr(v) then return nil, 'is a ' .. kind_of(v) .. ', not an array' end
  return v
end

local function get_obj(st, f)
  local v = getv(st, f)
  if v == ABSENT then return new_obj() end
  if not is_obj(v) then return nil, 'is a ' .. kind_of(v) .. ', not a record' end
  return v
end

local function trunc(x)
  if x >= 0 then return floor(x) end
  return ceil(x)
end

-- Applies one op; returns (result JSON text) or (nil, error message).
local function apply_op(st, op)
  local o, f = op.o, op.f
  if op.i and op.i ~= floor(op.i) then return nil, 'index must be an integer' end
  st.touched[f] = true
  if o == 'set' then setraw(st, f, op.v); return 'null' end
  if o == 'unset' then setraw(st, f, false); return 'null' end
  if o == 'incr' then
    local r = getraw(st, f)
    local x = 0
    if r then
      local c = sbyte(r, 1)
      if not (c == 45 or (c >= 48 and c <= 57)) then
        return nil, 'incr needs a number, the field ' .. 'is a ' .. kind_of(getv(st, f))
      end
      x = tonumber(r)
    end
    local s = fmtnum(x + op.by)
    if not s then return nil, 'incr would overflow to a non-finite number' end
    setraw(st, f, s)
    return s
  end
  if o == 'append' or o == 'extend' or o == 'insert' then
    local a, err = get_arr(st, f, true)
    if not a then return nil, o .. ': the field ' .. err end
    local n = #a
    if o == 'append' then
      a[n + 1] = decode(op.v)
    elseif o == 'extend' then
      for _, r in ipairs(op.vs) do n = n + 1; a[n] = decode(r) end
    else
      local i = trunc(op.i)
      if i < 0 then i = n + i; if i < 0 then i = 0 end elseif i > n then i = n end
      table.insert(a, i + 1, decode(op.v))
    end
    setv(st, f, a)
    return fmtnum(#a)
  end
  if o == 'remove' then
    local a, err = get_arr(st, f, false)
    if err then return nil, 'remove: the field ' .. err end
    if not a then return '0' end
    local want = decode(op.v)
    local out, n, removed = new_arr(), 0, 0
    for i = 1, #a do
      if deq(a[i], want) then removed = removed + 1 else n = n + 1; out[n] = a[i] end
    end
    if removed > 0 then setv(st, f, out) end
    return fmtnum(removed)
  end
  if o == 'pop' then
    local a, err = get_arr(st, f, false)
    if err then return nil, 'pop: the field ' .. err end
    if not a then return 'null' end
    local n = #a
    local i = trunc(op.i)
    if i < 0 then i = n + i end
    if i < 0 or i >= n then return 'null' end
    local v = table.remove(a, i + 1)
    setv(st, f, a)
    return encode(v)
  end
  if o == 'setItem' or o == 'deleteItem' or o == 'merge' then
    local obj, err = get_obj(st, f)
    if not obj then return nil, o .. ': the field ' .. err end
    local keys, map = obj.keys, obj.map
    if o == 'setItem' then
      if map[op.it] == nil then keys[#keys + 1] = op.it end
      map[op.it] = decode(op.v)
      setv(st, f, obj)
      return 'null'
    end
    if o == 'deleteItem' then
      if map[op.it] == nil then return 'false' end
      map[op.it] = nil
      for i = 1, #keys do
        if keys[i] == op.it then table.remove(keys, i); break end
      end
      setv(st, f, obj)
      return 'true'
    end
    local src = decode(op.v)
    if not is_obj(src) then return nil, 'merge needs an object value' end
    for _, k in ipairs(src.keys) do
      if map[k] == nil then keys[#keys + 1] = k end
      map[k] = src.map[k]
    end
    setv(st, f, obj)
    return 'null'
  end
  return nil, 'unknown op ' .. tostring(o)
end

-- ------------------------------------------------------------------------------- doc to JSON
local function doc_json(B)
  local h = redis.call('HGETALL', B)
  local v, w, c = nil, '', ''
  local parts, n = {}, 0
  for i = 1, #h, 2 do
    local k = h[i]
    if sbyte(k, 1) == 34 then
      n = n + 1; parts[n] = k .. ':' .. h[i + 1]
    elseif k == '_v' then v = h[i + 1]
    elseif k == '_w' then w = h[i + 1]
    elseif k == '_c' then c = h[i + 1] end
  end
  if not v then return 'null' end
  return '{"v":' .. v .. ',"w":' .. enc_str(w) .. ',"c":' .. enc_str(c) .. ',"f":{' .. tconcat(parts, ',') .. '}}'
end

-- The document as the batch left it, from memory (no second HGETALL).
local function state_json(st, token)
  if not st.exists then return 'null' end
  local parts, n, seen = {}, 0, {}
  if not st.replaced then
    for _, f in ipairs(st.order) do
      seen[f] = true
      local r = getraw(st, f)
      if r then n = n + 1; parts[n] = f .. ':' .. r end
    end
  end
  for f in pairs(st.dirty) do
    if not seen[f] then
      local r = getraw(st, f)
      if r then n = n + 1; parts[n] = f .. ':' .. r end
    end
  end
  return '{"v":' .. st.version .. ',"w":' .. enc_str(token) .. ',"c":' .. enc_str(st.inc) ..
    ',"f":{' .. tconcat(parts, ',') .. '}}'
end

-- ------------------------------------------------------------------------------- the batch
-- gi: for a guard refusal, the (1-based) index of the first false guard in that write.
local function refusal(reason, index, detail, gi)
  local s = '{"ok":0,"reason":"' .. reason .. '","index":' .. (index - 1)
  if gi then s = s .. ',"guard":' .. (gi - 1) end
  if detail then s = s .. ',"detail":' .. enc_str(detail) end
  return s .. '}'
end

local function flush(st, token)
  local B = st.key
  if st.deleted and not st.exists then
    redis.call('DEL', B)
    return
  end
  if st.replaced then redis.call('DEL', B) end
  local sets, dels = { '_v', st.version, '_w', token }, {}
  local n = 4
  if st.replaced then
    sets[5], sets[6], sets[7], sets[8] = '_r', st.replacedAt, '_c', st.inc
    n = 8
  end
  for f in pairs(st.dirty) do
    local r = getraw(st, f)
    if r then sets[n + 1] = f; sets[n + 2] = r; n = n + 2 else dels[#dels + 1] = f end
  end
  for f in pairs(st.touched) do sets[n + 1] = '^' .. f; sets[n + 2] = st.version; n = n + 2 end
  if #dels > 0 and not st.replaced then redis.call('HDEL', B, unpack(dels)) end
  redis.call('HSET', B, unpack(sets))
  -- Expiring documents: a replaced document was DEL'd (no TTL left); a TTL is set again here.
  if st.ttl then redis.call('PEXPIRE', B, st.ttl) end
end

-- ------------------------------------------------------------------------- group commit
-- A group (writes.lua) loads each document ONCE per call and keeps its committed state in
-- memory between batches: c = { exists, version, token0, replacedAt, inc, base, order, fvs,
-- mod, rewrite, chg = {lit}, fchg = {lit} }. Each batch works on a fresh st whose base/order/fvs
-- are c's tables, never mutated (st only ever writes raw/val/dirty/touched and reassigns fvs):
-- a refused batch is dropped and c is untouched (copy-on-write). An applied batch is folded
-- into NEW tables for c. group_store writes every changed document once at the end.
local function group_new() return { cur = {}, keys = {} } end

local function group_load(g, B)
  local c = g.cur[B]
  if not c then
    local st = load_doc(B)
    c = {
      exists = st.exists, version = st.version, token0 = st.token0, replacedAt = st.replacedAt,
      inc = st.inc, base = st.base, order = st.order, fvs = st.fvs, mod = false,
      rewrite = false, chg = {}, fchg = {},
    }
    g.cur[B] = c
    g.keys[#g.keys + 1] = B
  end
  return {
    key = B, exists = c.exists, version = c.version, token0 = c.token0,
    replacedAt = c.replacedAt, inc = c.inc, base = c.base, order = c.order, fvs = c.fvs,
    raw = {}, val = {}, dirty = {}, touched = {}, replaced = false, deleted = false,
    existed0 = c.exists, fresh = not c.exists,
  }
end

-- Folds an applied batch's st into its document's committed state.
local function group_fold(g, st, token)
  local c = g.cur[st.key]
  c.mod = true
  if st.deleted and not st.exists then
    c.exists, c.version, c.token0, c.replacedAt, c.inc = false, 0, '', 0, ''
    c.base, c.order, c.fvs, c.rewrite, c.chg, c.fchg = {}, {}, {}, true, {}, {}
    c.ttl = nil
    return
  end
  local base, order, fvs = {}, {}, {}
  if st.replaced then
    c.rewrite = true
    c.replacedAt, c.inc = st.replacedAt, st.inc
    for f, v in pairs(st.fvs) do fvs[f] = v end
  else
    for f, r in pairs(c.base) do base[f] = r end
    for i, f in ipairs(c.order) do order[i] = f end
    for f, v in pairs(c.fvs) do fvs[f] = v end
  end
  local gone = false
  for f in pairs(st.dirty) do
    local r = getraw(st, f)
    if r then
      if base[f] == nil then order[#order + 1] = f end
      base[f] = r
    elseif base[f] ~= nil then
      base[f] = nil
      gone = true
    end
    c.chg[f] = true
  end
  if gone then
    local o, n = {}, 0
    for _, f in ipairs(order) do
      if base[f] ~= nil then n = n + 1; o[n] = f end
    end
    order = o
  end
  for f in pairs(st.touched) do
    fvs[f] = st.version
    c.fchg[f] = true
  end
  c.exists, c.version, c.token0 = true, st.version, token
  c.base, c.order, c.fvs = base, order, fvs
  -- The TTL the last batch gave (false: a replace without one, which the DEL clears).
  if st.ttl ~= nil then c.ttl = st.ttl end
end

-- Writes every changed document of the group: one HSET (plus HDEL or DEL when needed) each.
local function group_store(g)
  for _, B in ipairs(g.keys) do
    local c = g.cur[B]
    if c.mod then
      if not c.exists then
        redis.call('DEL', B)
      elseif c.rewrite then
        redis.call('DEL', B)
        local sets, n = { '_v', c.version, '_w', c.token0, '_r', c.replacedAt, '_c', c.inc }, 8
        for _, f in ipairs(c.order) do sets[n + 1] = f; sets[n + 2] = c.base[f]; n = n + 2 end
        for f, v in pairs(c.fvs) do sets[n + 1] = '^' .. f; sets[n + 2] = v; n = n + 2 end
        redis.call('HSET', B, unpack(sets))
      else
        local sets, n, dels = { '_v', c.version, '_w', c.token0 }, 4, {}
        for f in pairs(c.chg) do
          local r = c.base[f]
          if r then sets[n + 1] = f; sets[n + 2] = r; n = n + 2 else dels[#dels + 1] = f end
        end
        for f in pairs(c.fchg) do sets[n + 1] = '^' .. f; sets[n + 2] = c.fvs[f]; n = n + 2 end
        if #dels > 0 then redis.call('HDEL', B, unpack(dels)) end
        redis.call('HSET', B, unpack(sets))
      end
      if c.exists and c.ttl then redis.call('PEXPIRE', B, c.ttl) end
    end
  end
end

-- A committed group document as doc_json would read it after group_store.
local function group_json(g, B)
  local c = g.cur[B]
  if not c then return doc_json(B) end
  if not c.exists then return 'null' end
  local parts = {}
  for i, f in ipairs(c.order) do parts[i] = f .. ':' .. c.base[f] end
  return '{"v":' .. c.version .. ',"w":' .. enc_str(c.token0) .. ',"c":' .. enc_str(c.inc) ..
    ',"f":{' .. tconcat(parts, ',') .. '}}'
end

-- Runs a batch. keyof(d) -> B for document index d (1-based). Returns
-- (reply JSON, applied boolean, and when applied: document index -> its JSON as committed). With a group g (writes.lua), documents come from and go back
-- to the group's in-memory state instead of Redis; the caller runs group_store at the end.
local function run_batch(env, keyof, g)
  local docs, order = {}, {}
  local function doc(d)
    local st = docs[d]
    if st then return st end
    if g then st = group_load(g, keyof(d)) else st = load_doc(keyof(d)) end
    docs[d] = st
    order[#order + 1] = d
    return st
  end
  local results = {}
  local stale = nil
  local function stale_reply()
    local parts = {}
    for i, d in ipairs(env.sd or stale) do
      local B = keyof(d)
      parts[i] = '"' .. (d - 1) .. '":' .. (g and group_json(g, B) or doc_json(B))
    end
    return '{"ok":0,"stale":{' .. tconcat(parts, ',') .. '}}'
  end
  -- A refusal after a write whose check verdict is unknown may not be the first failure.
  local function fail(reason, index, detail, gi)
    if stale then return stale_reply(), false end
    return refusal(reason, index, detail, gi), false
  end
  -- A document written again later in the batch: each write reports the document as IT left it.
  local last, mid = {}, {}
  for idx, w in ipairs(env.w) do last[w.d] = idx end
  for idx, w in ipairs(env.w) do
    local st = doc(w.d)
    local k = w.k
    if k == 'create' then
      if st.exists then return fail('exists', idx) end
      replace_all(st, w.data)
      st.version, st.replacedAt, st.inc = 1, 1, env.t
      st.ttl = w.ttl or false
      st.changed = true
      results[idx] = '[]'
    elseif k == 'put' then
      if st.exists then st.version = st.version + 1 else st.version, st.inc = 1, env.t end
      replace_all(st, w.data)
      st.replacedAt = st.version
      st.ttl = w.ttl or false
      st.changed = true
      results[idx] = '[]'
    elseif k == 'delete' then
      if not st.exists and w.ev then return fail('missing', idx) end
      if w.ev and w.ev ~= st.version then
        return fail('version', idx, 'expected version ' .. w.ev .. ', found ' .. st.version)
      end
      local existed = st.exists
      st.exists, st.deleted, st.fresh = false, true, true
      st.raw, st.val, st.dirty, st.touched = {}, {}, {}, {}
      st.changed = true
      results[idx] = existed and '[true]' or '[false]'
    else
      if not st.exists then return fail('missing', idx) end
      if w.ev and w.ev ~= st.version then
        return fail('version', idx, 'expected version ' .. w.ev .. ', found ' .. st.version)
      end
      if w.ei and w.ei ~= st.inc then
        return fail('version', idx, 'the document was deleted and created again since it was read')
      end
      if w.g then
        for gi, g in ipairs(w.g) do
          if not guard_ok(st, g) then return fail('guard', idx, 'guard ' .. (gi - 1) .. ' is false', gi) end
        end
      end
      if w.fs then
        if st.version < w.fs or (w.inc and w.inc ~= st.inc) then
          return fail('conflict', idx, 'it was deleted and created again since it was read')
        end
        for _, op in ipairs(w.ops) do
          local fv = st.fvs[op.f] or 0
          if st.replacedAt > fv then fv = st.replacedAt end
          if fv > w.fs then
            return fail('conflict', idx, 'field ' .. op.f .. ' was written at version ' .. fv ..
              ', after version ' .. w.fs .. ' that was read')
          end
        end
      end
      local rs = {}
      for oi, op in ipairs(w.ops) do
        local r, err = apply_op(st, op)
        if not r then return fail('invalid', idx, 'op ' .. oi .. ' (' .. op.o .. ' ' .. op.f .. '): ' .. err) end
        rs[oi] = r
      end
      if w.ck then
        if w.ck.t ~= st.token0 or w.ck.ok == 'u' then
          stale = stale or {}
          stale[#stale + 1] = w.d
        elseif w.ck.ok == false then
          return fail('invalid', idx, 'the document after the ops fails the schema')
        end
      end
      -- A patch without ops writes nothing and keeps the version (its guards and checks above
      -- still decide whether it applies). vb: a run of predicted applies folded into one patch
      -- (group.ts) counts as that many.
      local nops = #w.ops
      if nops > 0 then
        st.version = st.version + (w.vb or 1)
        st.changed = true
      end
      -- A patch with a TTL moves the document's expiry (even without ops).
      if w.ttl then st.ttl, st.changed = w.ttl, true end
      if nops > 0 and last[w.d] ~= idx then
        -- Written again later in this batch: a later fieldsUnchangedSince must see these fields
        -- as written now (copy first: st.fvs may be a group's shared table).
        local fvs = {}
        for f, v in pairs(st.fvs) do fvs[f] = v end
        for _, op in ipairs(w.ops) do fvs[op.f] = st.version end
        st.fvs = fvs
      end
      results[idx] = '[' .. tconcat(rs, ',') .. ']'
    end
    if last[w.d] ~= idx then mid[idx] = state_json(st, st.changed and env.t or st.token0) end
  end
  if stale then return stale_reply(), false end
  for _, d in ipairs(order) do
    local st = docs[d]
    if st.changed then
      if g then group_fold(g, st, env.t) else flush(st, env.t) end
    end
  end
  local dj, byKey = {}, {}
  for idx, w in ipairs(env.w) do
    local j = mid[idx] or byKey[w.d]
    if not j then
      if env.nd then
        -- The client predicted this document exactly (a folded chain, see group.ts): no fields.
        local st = docs[w.d]
        j = '{"v":' .. st.version .. ',"w":' .. enc_str(env.t) .. ',"c":' .. enc_str(st.inc) ..
          ',"f":{}}'
      else
        local st = docs[w.d]
        j = state_json(st, st.changed and env.t or st.token0)
      end
      byKey[w.d] = j
    end
    dj[idx] = j
  end
  return '{"ok":1,"docs":[' .. tconcat(dj, ',') .. '],"results":[' .. tconcat(results, ',') .. ']}',
    true, byKey
end

-- ------------------------------------------------------------------------------------ leases
-- Lease hash L: "m" = mode ("exclusive" | "shared"), "o:<owner>" = expiry (ms, server clock),
-- "f:<owner>" = the owner's fence. Queue Q: list of waiter ids; QA: waiter id ->
-- "<mode>|<expiry>|<channel>|<owner>|<leaseMs>|<key count>". F: the document's fence counter.

-- Drops expired owners; returns (count, mode, earliest expiry or nil).
local function purge_lease(L, now)
  local h = redis.call('HGETALL', L)
  if #h == 0 then return 0, nil, nil end
  local mode, count, soonest, dead = nil, 0, nil, {}
  for i = 1, #h, 2 do
    local k = h[i]
    if k == 'm' then mode = h[i + 1]
    elseif ssub(k, 1, 2) == 'o:' then
      local exp = tonumber(h[i + 1])
      if exp <= now then
        dead[#dead + 1] = k
        dead[#dead + 1] = 'f:' .. ssub(k, 3)
      else
        count = count + 1
        if not soonest or exp < soonest then soonest = exp end
      end
    end
  end
  if count == 0 then
    redis.call('DEL', L)
    return 0, nil, nil
  end
  if #dead > 0 then redis.call('HDEL', L, unpack(dead)) end
  return count, mode, soonest
end

local function parse_waiter(s)
  if not s then return nil end
  local m, e, ch, owner, lease, n = string.match(s, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  if not m then return nil end
  return { mode = m, exp = tonumber(e), ch = ch, owner = owner, lease = tonumber(lease), n = tonumber(n) }
end

-- Drops dead waiters (expired entries); returns the live queue as a list of waiter tables.
local function live_queue(Q, QA, now)
  local ids = redis.call('LRANGE', Q, 0, -1)
  if #ids == 0 then return {} end
  local infos = redis.call('HMGET', QA, unpack(ids))
  local out = {}
  for i, id in ipairs(ids) do
    local w = parse_waiter(infos[i])
    if w and w.exp > now then
      w.id = id
      out[#out + 1] = w
    else
      redis.call('LREM', Q, 0, id)
      if infos[i] then redis.call('HDEL', QA, id) end
    end
  end
  return out
end

-- Fencing tokens. F is a counter with a TTL (FENCE_TTL_MS from when it was seeded), so that a
-- locked name leaves nothing behind for good: no key without a TTL but the document itself.
-- A missing counter (first lock of the name, or expired) is seeded from the server's clock in
-- microseconds, and INCRemented from there. Why the fences of one (document, action) stay
-- strictly increasing across the counter's expiry:
-- - within one life of F, INCR gives t0 + 1, t0 + 2, ... (t0: the clock when it was seeded);
-- - F lives FENCE_TTL_MS after its seeding (INCR keeps the TTL), so a new seed t1 >= t0 +
--   FENCE_TTL_MS * 1000, and every fence of the old life is t0 + k, k = the grants of that
--   life. Each grant is one step of a script, and Redis runs scripts one at a time: even a
--   burst that grants a whole run of shared waiters in one script grants each once after its
--   own queueing script. Fewer than FENCE_TTL_MS * 1000 grants (10^6 per second for an hour)
--   is far beyond any server, so t0 + k < t1: the new life starts above every old fence;
-- - this holds for fences still held, or presented to other systems after the lease ended;
--   it assumes the server's clock is not set back by more than FENCE_TTL_MS across a seeding
--   (Redis's own key expiry relies on the same clock).
-- A counter below 10^15 (a counter of an older version, kept without a TTL, or the 1 that INCR
-- makes of a missing key) is seeded too: every clock value since 2001 is above 10^15, so the
-- seed exceeds it. Fences stay below 2^53 (exact JavaScript numbers) until the year 2255. They
-- are formatted as integers here: Lua's own number-to-text would print 1.7e+15.
local FENCE_TTL_MS = 3600000
local function next_fence(F)
  local fence = redis.call('INCR', F)
  if fence < 1e15 then
    local t = redis.call('TIME')
    fence = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local s = sformat('%.0f', fence)
    redis.call('SET', F, s, 'PX', FENCE_TTL_MS)
    return s
  end
  return sformat('%.0f', fence)
end

-- fresh: L was just deleted (no ttl to keep), so the expiry is set without asking for it.
local function grant(L, owner, mode, leaseMs, now, F, fresh)
  local fence = next_fence(F)
  redis.call('HSET', L, 'm', mode, 'o:' .. owner, now + leaseMs, 'f:' .. owner, fence)
  if fresh or redis.call('PTTL', L) < leaseMs then redis.call('PEXPIRE', L, leaseMs) end
  return fence
end

-- The live head of the queue (dead entries at the head are dropped), or nil. take: the head is
-- taken off the queue too (LPOP instead of LINDEX).
local function live_head(Q, QA, now, take)
  while true do
    local id
    if take then id = redis.call('LPOP', Q) else id = redis.call('LINDEX', Q, 0) end
    if not id then return nil end
    local w = parse_waiter(redis.call('HGET', QA, id))
    if w and w.exp > now then
      w.id = id
      return w
    end
    if not take then redis.call('LPOP', Q) end
    redis.call('HDEL', QA, id)
  end
end

-- Serves the head of the queue now that the lease may be free: a single-key waiter is GRANTED
-- the lease here (hand-off without a round trip: the wake-up carries its fence and the document
-- as of now); a multi-key waiter is only woken, to try all its keys at once. A wake-up for the
-- caller's own process (loc.ch is its channel) goes into loc, for the script's reply, instead of
-- pub/sub (loc.docs: B -> the document's JSON as the caller's batch just committed it, if known;
-- loc.pdocs: the same without its fields, which the caller predicted, for the caller's own
-- waiters only, flagged "p"; or true: such grants go to loc.cg as waiter id, fence pairs): that
-- process reads it with the reply it is waiting for anyway, and can start the next holder before
-- it resumes the one that just committed.
-- popped: w was taken off Q already (live_head with take); fresh: see grant.
local function serve(w, L, Q, QA, B, F, now, loc, popped, fresh)
  local payload = 'null'
  local granted = false
  if w.n == 1 then
    if not popped then redis.call('LREM', Q, 1, w.id) end
    redis.call('HDEL', QA, w.id)
    local fence = grant(L, w.owner, w.mode, w.lease, now, F, fresh)
    local pdoc = loc and w.ch == loc.ch and loc.pdocs and loc.pdocs[B]
    if pdoc == true then
      -- The caller predicted the document and takes the grant as waiter id, fence (see the
      -- compact reply in commit.lua).
      loc.cg[#loc.cg + 1] = w.id
      loc.cg[#loc.cg + 1] = fence
      return true
    end
    if pdoc then
      payload = '{"ok":1,"fences":[' .. fence .. '],"docs":[' .. pdoc .. '],"p":1}'
    else
      local doc = loc and loc.docs and loc.docs[B] or doc_json(B)
      payload = '{"ok":1,"fences":[' .. fence .. '],"docs":[' .. doc .. ']}'
    end
    granted = true
  end
  if loc and w.ch == loc.ch then
    loc[#loc + 1] = '["' .. w.id .. '",' .. payload .. ']'
  elseif granted then
    redis.call('PUBLISH', w.ch, w.id .. ' ' .. payload)
  else
    redis.call('PUBLISH', w.ch, w.id)
  end
  return granted
end

local function wake(L, Q, QA, B, F, now, loc)
  local count, mode = purge_lease(L, now)
  if count > 0 and mode == 'exclusive' then return end
  local head = live_head(Q, QA, now)
  if not head then return end
  if head.mode == 'exclusive' then
    if count == 0 then serve(head, L, Q, QA, B, F, now, loc) end
    return
  end
  -- A run of shared waiters: serve all of them (rare path, scans the queue).
  for _, w in ipairs(live_queue(Q, QA, now)) do
    if w.mode == 'exclusive' then return end
    serve(w, L, Q, QA, B, F, now, loc)
  end
end

-- The wake-ups collected in loc, as a JSON array of [waiter id, grant or null].
local function local_wakeups(loc)
  return '[' .. tconcat(loc, ',') .. ']'
end

-- Could waiter `wid` (or a newcomer, when wid is absent from the queue) take `mode` now?
-- Returns (ok, retry-after ms for the fallback timer).
local function grantable(L, Q, QA, wid, mode, now)
  local count, held, soonest = purge_lease(L, now)
  local ok = true
  local retry = nil
  if count > 0 and (mode == 'exclusive' or held == 'exclusive') then
    -- Held in a conflicting mode: no need to look at the queue (look again when it expires).
    return false, soonest - now
  end
  if mode == 'exclusive' then
    -- FIFO, no barging: only the head of the queue (or a newcomer to an empty queue).
    local head = live_head(Q, QA, now)
    if head and head.id ~= wid then
      ok = false
      local r = head.exp - now
      if not retry or r < retry then retry = r end
    end
    return ok, retry
  end
  local q = live_queue(Q, QA, now)
  for _, w in ipairs(q) do
    if w.id == wid then break end
    if w.mode == 'exclusive' then
      ok = false
      local r = w.exp - now
      if not retry or r < retry then retry = r end
      break
    end
  end
  return ok, retry
end

-- sole: the caller knows it is the only live owner of L (see commit.lua), so L is simply deleted
-- and, when the head of the queue is one exclusive single-key waiter, handed to it with fewer
-- calls (the common hand-off: DEL, LPOP, HGET, HDEL, INCR, HSET, PEXPIRE).
local function release_owner(L, Q, QA, B, F, owner, now, loc, sole)
  if not sole then
    redis.call('HDEL', L, 'o:' .. owner, 'f:' .. owner)
    wake(L, Q, QA, B, F, now, loc)
    return
  end
  redis.call('DEL', L)
  local head = live_head(Q, QA, now, true)
  if not head then return end
  if head.mode == 'exclusive' and head.n == 1 then
    serve(head, L, Q, QA, B, F, now, loc, true, true)
    return
  end
  redis.call('LPUSH', Q, head.id)
  wake(L, Q, QA, B, F, now, loc)
end

-- Does `owner` still hold L (present and unexpired)?
local function holds(L, owner, now)
  local exp = tonumber(redis.call('HGET', L, 'o:' .. owner))
  return exp ~= nil and exp > now
end

-- --------------------------------------------------------------- plain writers wait for leases
-- A plain write batch (write.lua, writes.lua; never a lease's commit) waits while one of its
-- documents has a live exclusive lease of the default action (backend.ts, "Unwritten rules"),
-- as an UPDATE waits for a row locked FOR UPDATE. The lease keys of the default action are
-- built here from the document's key instead of being sent in KEYS: they share its hash tag,
-- hence its Cluster slot, and the uncontended write then costs one HGET per document and no
-- bytes on the wire.
--
-- A writer that found a lease answers "locked" having written nothing; the client then sends the
-- batch again with a waiter id (env.q), its wake-up channel (env.ch) and the entry's ttl (env.qt),
-- and a batch that still finds a lease queues that id on EVERY document of the batch as a
-- waiter of mode shared and key count 0: "wake only, never granted" (see serve). So a writer
-- takes its turn in the FIFO: exclusive waiters queued before it go first, and the ones queued
-- after it cannot take the lease while its entry stands (grantable admits only the head), so a
-- stream of lock holders cannot starve it; shared waiters are not held back by it, nor is it by
-- shared leases. When the lease ends, the release wakes the writer (pub/sub), its batch runs,
-- and the same script takes its entries out and serves the next waiters (write_dequeue).

-- The earliest expiry (server clock) among the live owners of B's default-action exclusive
-- lease, or nil when there is none.
local function default_exclusive(B)
  local L = B .. ':l:default'
  if redis.call('HGET', L, 'm') ~= 'exclusive' then return nil end
  local now = now_ms()
  local h = redis.call('HGETALL', L)
  local soonest = nil
  for i = 1, #h, 2 do
    if ssub(h[i], 1, 2) == 'o:' then
      local exp = tonumber(h[i + 1])
      if exp > now and (not soonest or exp < soonest) then soonest = exp end
    end
  end
  return soonest
end

-- nil when the batch may run now; otherwise its answer ('{"ok":0,"locked":<write index>,
-- "retry":<ms until the lease's expiry>}'), having written nothing but, with env.q, the
-- writer's queue entries. cache (writes.lua): B -> expiry or false, for the call (no lease
-- changes hands while the call's batches run: the dequeues come after them all).
local function write_gate(env, keyof, cache)
  local lockedAt, soonest, seen = nil, nil, {}
  for idx, w in ipairs(env.w) do
    local d = w.d
    if not seen[d] then
      seen[d] = true
      local B = keyof(d)
      local exp
      if cache and cache[B] ~= nil then
        exp = cache[B]
      else
        exp = default_exclusive(B) or false
        if cache then cache[B] = exp end
      end
      if exp then
        lockedAt = lockedAt or idx
        if not soonest or exp < soonest then soonest = exp end
      end
    end
  end
  if not lockedAt then return nil end
  local now = now_ms()
  if env.q then
    local ttl = env.qt
    local entry = 'shared|' .. (now + ttl) .. '|' .. env.ch .. '|' .. env.q .. '|0|0'
    for d in pairs(seen) do
      local B = keyof(d)
      local Q, QA = B .. ':q:default', B .. ':qa:default'
      if redis.call('HSET', QA, env.q, entry) == 1 then redis.call('RPUSH', Q, env.q) end
      redis.call('PEXPIRE', Q, ttl * 3)
      redis.call('PEXPIRE', QA, ttl * 3)
    end
  end
  return '{"ok":0,"locked":' .. (lockedAt - 1) .. ',"retry":' .. math.max(0, soonest - now) .. '}'
end

-- A queued writer's batch ran (applied or refused): take its entries out of the queues of its
-- documents and serve whoever they held back (by pub/sub, also for the caller's own process).
local function write_dequeue(env, keyof)
  local now, seen = now_ms(), {}
  for _, w in ipairs(env.w) do
    local d = w.d
    if not seen[d] then
      seen[d] = true
      local B = keyof(d)
      local L, Q, QA = B .. ':l:default', B .. ':q:default', B .. ':qa:default'
      if redis.call('HDEL', QA, env.q) == 1 then
        redis.call('LREM', Q, 0, env.q)
        wake(L, Q, QA, B, B .. ':f', now, nil)
      end
    end
  end
end
