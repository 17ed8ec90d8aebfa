-- advance: a run ended; takes it off its thread and hands the next live run of the thread to
-- this node. The next run handed out is noted on the finished run's record, so a replay (its
-- reply was lost) hands the same run out again instead of nothing. Ended records are never set
-- running again.
-- KEYS: thread queue, leases, active runs
-- ARGV: runId, lease prefix, nodeId, lease expiry, run record prefix
-- Returns false, or {runId, thread, message, text, cancel} of the run handed out (fields as
-- stored: encoded).
local finished = ARGV[5] .. ARGV[1]
redis.call('ZREM', KEYS[2], ARGV[2] .. ARGV[1] .. '"]')
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] then
  local handed = redis.call('HGET', finished, RUN.next)
  if not handed then return false end
  local r = redis.call('HMGET', ARGV[5] .. handed, RUN.state, RUN.owner, RUN.thread, RUN.message, RUN.text, RUN.cancel)
  if r[1] ~= STATE.running or r[2] ~= ARGV[3] then return false end
  return {handed, r[3], r[4], r[5], r[6]}
end
redis.call('LPOP', KEYS[1])
while true do
  local nextId = redis.call('LINDEX', KEYS[1], 0)
  if not nextId then return false end
  local key = ARGV[5] .. nextId
  local state = redis.call('HGET', key, RUN.state)
  if state and state ~= STATE.ended then
    redis.call('HSET', key, RUN.state, STATE.running, RUN.owner, ARGV[3], RUN.advanced, '1')
    redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2] .. nextId .. '"]')
    if redis.call('EXISTS', finished) == 1 then redis.call('HSET', finished, RUN.next, nextId) end
    local r = redis.call('HMGET', key, RUN.thread, RUN.message, RUN.text, RUN.cancel)
    return {nextId, r[1], r[2], r[3], r[4]}
  end
  redis.call('LPOP', KEYS[1])
  redis.call('ZREM', KEYS[3], nextId)
end
