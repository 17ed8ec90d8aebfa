-- activeRuns: the user's runs still running or queued, oldest first; ended or vanished records are skipped.
-- KEYS: active runs
-- ARGV: run record prefix
-- Returns flat triples: run id, thread (encoded), state.
local found = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local r = redis.call('HMGET', ARGV[1] .. id, RUN.thread, RUN.state)
  if r[1] and (r[2] == STATE.running or r[2] == STATE.queued) then
    table.insert(found, id); table.insert(found, r[1]); table.insert(found, r[2])
  end
end
return found
