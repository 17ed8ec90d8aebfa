-- Fragment (included by head.lua and append.lua, not a script of its own): creates the log's
-- meta if it is missing (log lost or new), so an epoch is created exactly once per unbroken
-- history of a user's log. Sets `epoch` and `seq` (the last seq assigned, a string), read in one
-- HMGET.
-- KEYS: meta, log
-- ARGV: newEpoch, ttlMs
local meta = redis.call('HMGET', KEYS[1], META.epoch, META.seq)
local epoch, seq = meta[1], meta[2]
if not epoch then
  epoch, seq = ARGV[1], '0'
  redis.call('HSET', KEYS[1], META.epoch, epoch, META.seq, seq)
  redis.call('DEL', KEYS[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
