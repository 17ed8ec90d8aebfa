-- pruneMarks: removes thread marks judged dead (LogHistoryStore.pruneMarks), each only while the
-- stored mark is still the judged one: a rename or deletion written since by any node stays.
-- KEYS: marks, meta
-- ARGV: epoch, seq (the head the marks were judged at), then per mark: field, mark JSON, whileAt
-- whileAt '1': the mark is dead only while the log still stands at epoch/seq (a rename: its
-- thread could have been resumed since).
-- Returns how many were removed.
--#include sameMark.lua
local meta = redis.call('HMGET', KEYS[2], META.epoch, META.seq)
local still = meta[1] == ARGV[1] and meta[2] == ARGV[2]
local removed = 0
for i = 3, #ARGV, 3 do
  if (ARGV[i + 2] == '0' or still) and same(redis.call('HGET', KEYS[1], ARGV[i]), ARGV[i + 1]) then
    redis.call('HDEL', KEYS[1], ARGV[i])
    removed = removed + 1
  end
end
return removed
