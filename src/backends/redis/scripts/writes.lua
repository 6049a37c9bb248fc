-- writes: several independent batches in one call (group commit), run in order; each batch is
-- atomic on its own and has its own reply. Each document is loaded once and stored once per
-- call (see group_load in lib.lua). A batch touching a document with an exclusive lease of the
-- default action answers "locked" (see write_gate). KEYS: the union of their document hashes.
-- ARGV[1]: [{ k = {KEYS index per local document}, e = envelope }, ...]
local batches = cjson.decode(ARGV[1])
local out = {}
local g = group_new()
local gate = {}
local queued = nil
for i, b in ipairs(batches) do
  local map = b.k
  local keyof = function(d) return KEYS[map[d]] end
  local held = write_gate(b.e, keyof, gate)
  if held then
    out[i] = held
  else
    out[i] = run_batch(b.e, keyof, g)
    if b.e.q and not sfind(out[i], '^{"ok":0,"stale"') then
      queued = queued or {}
      queued[#queued + 1] = { b.e, keyof }
    end
  end
end
group_store(g)
-- After the documents are stored: a lease handed over by a dequeue carries them as written.
if queued then
  for _, q in ipairs(queued) do write_dequeue(q[1], q[2]) end
end
return '[' .. tconcat(out, ',') .. ']'
