-- putMark: writes one thread's mark (renames and deletions of the log-folded history). With a
-- check, only while the stored mark is still the one the caller read: a rename must not write
-- over a deletion made since (the deleted thread would come back).
-- KEYS: marks
-- ARGV: field, mark JSON, ttlMs (keyTtlMs: as the log), check ('1' or '0'), expected mark JSON ('' when none was stored)
-- Returns 1 when written, 0 when the stored mark is another by now.

--#include sameMark.lua
if ARGV[4] == '1' and not same(redis.call('HGET', KEYS[1], ARGV[1]), ARGV[5]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
