-- renewRun: keeps a running run's keys for the retention from now: its thread queue (the runs
-- queued behind it), its record, its message claim and the user's active runs. ENQUEUE wrote them
-- for the retention; a run that outlives it must not lose them while it runs (the runs queued
-- behind it would never start, the run cap would stop counting it). Sent with every lease
-- renewal (RedisRunStore.renewLeases); a key that is gone stays gone.
-- KEYS: thread queue, run record, message claim, active runs
-- ARGV: ttlMs (keyTtlMs, keys.ts)
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return 0
