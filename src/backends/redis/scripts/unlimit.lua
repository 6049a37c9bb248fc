-- unlimit: forgets rate-limit keys (resetLimit). KEYS: the key's state keys (see consume.lua).
return redis.call('DEL', unpack(KEYS))
