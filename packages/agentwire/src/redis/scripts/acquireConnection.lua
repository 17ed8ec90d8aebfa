-- acquireConnection: registers a connection in its user's set unless the user already has
-- `cap` live ones (entries past their expiry are pruned first).
-- KEYS: connections
-- ARGV: now, expiry, connectionId, cap, set ttlMs
-- Returns 1 when registered (or already there), else 0.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
