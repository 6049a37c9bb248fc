-- write: one atomic, guarded batch. KEYS: the document hashes. ARGV[1]: the batch envelope.
local env = cjson.decode(ARGV[1])
local reply = run_batch(env, function(d) return KEYS[d] end)
return reply
