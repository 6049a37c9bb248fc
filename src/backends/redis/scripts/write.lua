-- write: one atomic, guarded batch. KEYS: the document hashes. ARGV[1]: the batch envelope.
-- Waits (answers "locked", see write_gate in lib.lua) while a document has an exclusive lease
-- of the default action.
local env = cjson.decode(ARGV[1])
local keyof = function(d) return KEYS[d] end
local held = write_gate(env, keyof)
if held then return held end
local reply = run_batch(env, keyof)
-- A queued writer leaves its queues once its batch has run (a "stale" batch goes again at once).
if env.q and not sfind(reply, '^{"ok":0,"stale"') then write_dequeue(env, keyof) end
return reply
