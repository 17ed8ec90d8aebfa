-- append: appends a batch of events to a user's log, assigning consecutive seqs atomically (two
-- nodes can never assign the same seq), and publishes them in one notification (see
-- parseNotification in engine.ts).
-- KEYS: meta, log, run record
-- ARGV: newEpoch, ttlMs, maxLen, channel, publish command, now, fence, terminal, count, appendId, then per event: json head, json tail, type
-- The run record is a dummy key in the same slot when no fence is wanted. fence '1' checks that
-- the run record is not ended and marks it started; terminal '1' marks it ended. appendId is ''
-- for none. Each event's JSON is head .. seq .. tail, so the seq is written into the event
-- here, where it is assigned.
-- Returns {epoch, firstSeq, skipped}, or {epoch, -1, 0} when fenced off. A fenced append whose
-- id is the run's last applied one (a retry after a lost reply) is not applied again: it
-- returns what it got then. A fenced append that leads with agent_started for a run that
-- already started skips it (skipped = 1): a run whose first append was applied but never
-- confirmed re-sends agent_started with its failure.
--#include ensureMeta.lua
local skip = 0
if ARGV[7] == '1' then
  if ARGV[10] ~= '' and redis.call('HGET', KEYS[3], RUN.append) == ARGV[10] then
    local r = redis.call('HMGET', KEYS[3], RUN.appended, RUN.skipped)
    return {epoch, tonumber(r[1]), tonumber(r[2] or '0')}
  end
  if redis.call('HGET', KEYS[3], RUN.state) == STATE.ended then return {epoch, -1, 0} end
  if ARGV[13] == 'agent_started' and redis.call('HGET', KEYS[3], RUN.started) == '1' then skip = 1 end
  redis.call('HSET', KEYS[3], RUN.started, '1')
  if ARGV[8] == '1' then redis.call('HSET', KEYS[3], RUN.state, STATE.ended) end
end
local seq = tonumber(redis.call('HGET', KEYS[1], META.seq))
local first = seq + 1
local count = tonumber(ARGV[9])
local notification = {epoch .. ' ' .. ARGV[6]}
for i = skip, count - 1 do
  seq = seq + 1
  local json = ARGV[11 + 3 * i] .. seq .. ARGV[12 + 3 * i]
  local etype = ARGV[13 + 3 * i]
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], seq .. '-0', LOG.json, json, LOG.type, etype, LOG.appendedAt, ARGV[6])
  notification[#notification + 1] = seq .. ' ' .. etype .. ' ' .. json
end
if count > skip then redis.call(ARGV[5], ARGV[4], table.concat(notification, '\n')) end
if ARGV[7] == '1' and ARGV[10] ~= '' then
  redis.call('HSET', KEYS[3], RUN.append, ARGV[10], RUN.appended, first, RUN.skipped, skip)
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
redis.call('HSET', KEYS[1], META.seq, seq)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {epoch, first, skip}
