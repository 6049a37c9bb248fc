-- read: fresh snapshots. KEYS: document hashes. Returns a JSON array (null where missing).
local out = {}
for i = 1, #KEYS do out[i] = doc_json(KEYS[i]) end
return '[' .. tconcat(out, ',') .. ']'
