-- append: appends a batch of events to a user's log, assigning consecutive seqs atomically (two
-- nodes can never assign the same seq), and publishes them in one notification (see
-- parseNotification in engine.ts).
-- KEYS: meta, log, run record, thread marks
-- ARGV: newEpoch, ttlMs, maxLen, channel, publish command, now, fence, terminal, count, appendId, retentionMs, then per event: json head, json tail, type
-- ttlMs is keyTtlMs(retentionMs) (keys.ts). Meta, log and thread marks are renewed to it
-- together once the log has less than retentionMs left (or none: new, or written without one),
-- not on every append; so the thread marks (threadMarks.ts, written with ttlMs too) live as long
-- as the log: a deletion's mark must outlast the deleted thread's events, or the thread would
-- come back while the log still holds them. A fenced append's run record is renewed by its own
-- TTL in the same way: another run's append may have renewed the log, and this append may have
-- created the record (a run_lost append after the record expired).
-- The run record is a dummy key in the same slot when no fence is wanted. fence '1' checks that
-- the run record is not ended and marks it started; terminal '1' marks it ended. appendId is ''
-- for none. Each event's JSON is head .. seq .. tail, so the seq is written into the event
-- here, where it is assigned.
-- Returns {epoch, firstSeq, skipped}, or {epoch, -1, 0} when fenced off. A fenced append whose
-- id is the run's last applied one (a retry after a lost reply) is not applied again: it
-- returns what it got then. A fenced append that leads with agent_started for a run that
-- already started skips it (skipped = 1): a run whose first append was applied but never
-- confirmed re-sends agent_started with its failure.
-- The run record is written after the events (one HSET, a second with the terminal): a script
-- that fails part-way (Redis does not roll scripts back) marks no run started or ended without
-- its events. It is read with HGETs: an HMGET's array reply costs Redis more than the HGETs it
-- would replace (docs/BENCHMARKS.md, "The append script").
--#include ensureMeta.lua
local renew = redis.call('PTTL', KEYS[2]) < tonumber(ARGV[11])
local fenced = ARGV[7] == '1'
local skip = 0
if fenced then
  if ARGV[10] ~= '' and redis.call('HGET', KEYS[3], RUN.append) == ARGV[10] then
    local r = redis.call('HMGET', KEYS[3], RUN.appended, RUN.skipped)
    return {epoch, tonumber(r[1]), tonumber(r[2] or '0')}
  end
  if redis.call('HGET', KEYS[3], RUN.state) == STATE.ended then return {epoch, -1, 0} end
  if ARGV[14] == 'agent_started' and redis.call('HGET', KEYS[3], RUN.started) == '1' then skip = 1 end
end
-- `last` is the last seq assigned as a string (each seq is formatted once), `seq` as a number.
local last = seq
seq = tonumber(seq)
local first = seq + 1
local count = tonumber(ARGV[9])
local notification = {epoch .. ' ' .. ARGV[6]}
for i = skip, count - 1 do
  seq = seq + 1
  last = tostring(seq)
  local json = ARGV[12 + 3 * i] .. last .. ARGV[13 + 3 * i]
  local etype = ARGV[14 + 3 * i]
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], last .. '-0', LOG.json, json, LOG.type, etype, LOG.appendedAt, ARGV[6])
  notification[#notification + 1] = last .. ' ' .. etype .. ' ' .. json
end
if count > skip then redis.call(ARGV[5], ARGV[4], table.concat(notification, '\n')) end
if fenced then
  if ARGV[10] == '' then
    redis.call('HSET', KEYS[3], RUN.started, '1')
  else
    redis.call('HSET', KEYS[3], RUN.started, '1', RUN.append, ARGV[10], RUN.appended, first, RUN.skipped, skip)
  end
  if ARGV[8] == '1' then redis.call('HSET', KEYS[3], RUN.state, STATE.ended) end
  if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[11]) then redis.call('PEXPIRE', KEYS[3], ARGV[2]) end
end
redis.call('HSET', KEYS[1], META.seq, last)
if renew then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[4], ARGV[2])
end
return {epoch, first, skip}
