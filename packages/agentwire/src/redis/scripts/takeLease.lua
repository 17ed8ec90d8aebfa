-- takeLease: takes over an expired lease by moving its expiry forward. Exactly one node
-- succeeds, and if that node fails before the run is ended and its thread advanced, the lease
-- expires again and another sweep retries.
-- KEYS: leases
-- ARGV: member, now, new expiry
-- Returns 1 when taken, else 0.
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
