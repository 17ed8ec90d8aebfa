-- enqueue: creates a run on its thread's queue, claiming its message id, in one atomic step
-- with the thread policy and the user's run cap. All keys are in the user's slot (keys.ts).
-- KEYS: thread queue, run record, leases, message claim, active runs
-- ARGV: policy, maxQueued, nodeId, ttlMs, runId, user, thread, message, text, lease expiry, claim JSON, replay only, lease prefix, max active runs, now, run record prefix
-- user, thread, message and text are encoded (encodeId). replay only '1' answers 'absent'
-- instead of creating the run. A lease member is lease prefix .. runId .. '"]'. ttlMs is
-- keyTtlMs(retentionMs) (keys.ts), what the user's log is written with: a run record outlives
-- its run's last append by the retention.
-- Returns 'start', 'queued', 'busy', 'too_many_runs', 'absent' or {'duplicate', claim JSON}.
-- The message id's claim decides first: another run's claim answers {'duplicate', claim}, our
-- own means this is a replay. The claim is written last, together with its run, so neither a
-- 'busy' or 'too_many_runs' answer nor a script that fails part-way (Redis does not roll
-- scripts back) leaves a claim without a run: no message is ever acked as a duplicate of a run
-- that never starts.
local claimed = redis.call('GET', KEYS[4])
if claimed and claimed ~= ARGV[11] then return {'duplicate', claimed} end
-- Only a wholly applied enqueue wrote the claim (last): anything less was never acked.
if ARGV[12] == '1' and not claimed then return 'absent' end
local member = ARGV[13] .. ARGV[5] .. '"]'
local current = redis.call('HMGET', KEYS[2], RUN.state, RUN.owner, RUN.advanced)
if current[1] then
  -- A replay (the reply to the first application was lost), so this node has not started the
  -- run: it does now if this script made it the running one (its lease renewed, as it may
  -- have lapsed meanwhile); one handed out since by ADVANCE (here or on another node) is
  -- started by that node, and an ended one stays ended.
  if current[1] == STATE.running and current[2] == ARGV[3] and not current[3] then
    redis.call('ZADD', KEYS[3], 'XX', ARGV[10], member)
    return 'start'
  end
  return 'queued'
end
if ARGV[12] == '1' then return 'absent' end
local len = redis.call('LLEN', KEYS[1])
if len > 0 and (ARGV[1] == 'reject' or len > tonumber(ARGV[2])) then return 'busy' end
local cap = tonumber(ARGV[14])
if redis.call('ZCARD', KEYS[5]) >= cap then
  -- Only runs still running or queued count: an entry whose record ended, vanished (expiry,
  -- eviction) or runs without a lease (nobody would ever end it) is dropped, so no crash or
  -- data loss holds the cap for good.
  for _, id in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
    local state = redis.call('HGET', ARGV[16] .. id, RUN.state)
    if not state or state == STATE.ended
      or (state == STATE.running and not redis.call('ZSCORE', KEYS[3], ARGV[13] .. id .. '"]')) then
      redis.call('ZREM', KEYS[5], id)
    end
  end
  if redis.call('ZCARD', KEYS[5]) >= cap then return 'too_many_runs' end
end
redis.call('RPUSH', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local state = STATE.queued
local owner = ''
if len == 0 then state = STATE.running; owner = ARGV[3] end
redis.call('HSET', KEYS[2], RUN.user, ARGV[6], RUN.thread, ARGV[7], RUN.message, ARGV[8], RUN.text, ARGV[9],
  RUN.state, state, RUN.owner, owner, RUN.cancel, '0')
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if len == 0 then redis.call('ZADD', KEYS[3], ARGV[10], member) end
redis.call('ZADD', KEYS[5], ARGV[15], ARGV[5])
redis.call('PEXPIRE', KEYS[5], ARGV[4])
redis.call('SET', KEYS[4], ARGV[11], 'PX', ARGV[4])
if len == 0 then return 'start' end
return 'queued'
