-- Fragment (included by head.lua and append.lua, not a script of its own): a function that
-- creates the log's meta if it is missing (log lost or new), so an epoch is created exactly once
-- per unbroken history of a user's log. Returns the epoch and the last seq assigned (a string),
-- read in one HMGET.
local function ensureMeta(metaKey, logKey, newEpoch, ttlMs)
  local meta = redis.call('HMGET', metaKey, META.epoch, META.seq)
  if meta[1] then return meta[1], meta[2] end
  redis.call('HSET', metaKey, META.epoch, newEpoch, META.seq, '0')
  redis.call('DEL', logKey)
  redis.call('PEXPIRE', metaKey, ttlMs)
  return newEpoch, '0'
end
