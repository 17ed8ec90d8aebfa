-- Fragment (included by head.lua and append.lua, not a script of its own): creates the log's
-- meta if it is missing (log lost or new), so an epoch is created exactly once per unbroken
-- history of a user's log. Sets `epoch`.
-- KEYS: meta, log
-- ARGV: newEpoch, ttlMs
local epoch = redis.call('HGET', KEYS[1], META.epoch)
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], META.epoch, epoch, META.seq, 0)
  redis.call('DEL', KEYS[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
