-- writes: several independent batches in one call (group commit), run in order; each batch is
-- atomic on its own and has its own reply. Each document is loaded once and stored once per
-- call (see group_load in lib.lua). KEYS: the union of their document hashes.
-- ARGV[1]: [{ k = {KEYS index per local document}, e = envelope }, ...]
local batches = cjson.decode(ARGV[1])
local out = {}
local g = group_new()
for i, b in ipairs(batches) do
  local map = b.k
  out[i] = run_batch(b.e, function(d) return KEYS[map[d]] end, g)
end
group_store(g)
return '[' .. tconcat(out, ',') .. ']'
