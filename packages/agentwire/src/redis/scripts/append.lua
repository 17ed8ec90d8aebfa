-- append: appends batches of events to users' logs (each an "append": one user's batch of one
-- run, or unfenced), assigning consecutive seqs atomically (two nodes can never assign the same
-- seq), and publishes each append in one notification (see parseNotification in engine.ts). The
-- appends of a call are independent: one that fails (pcall) answers an error and the others are
-- still applied, as if each had been a call of its own. Several go in one call because a call
-- costs Redis and the gateway about as much as a few events (engine.ts, #flush).
-- KEYS per append: meta, log, run record, thread marks
-- ARGV: ttlMs, maxLen, publish command, now, retentionMs, then per append: newEpoch, channel, fence, terminal, count, appendId, then per event of it: json head, json tail, type
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
-- Returns per append {epoch, firstSeq, skipped}, {epoch, -1, 0} when fenced off, or an error. A fenced append whose
-- id is the run's last applied one (a retry after a lost reply) is not applied again: it
-- returns what it got then. A fenced append that leads with agent_started for a run that
-- already started skips it (skipped = 1): a run whose first append was applied but never
-- confirmed re-sends agent_started with its failure.
-- The run record is written after the events (one HSET, a second with the terminal): a script
-- that fails part-way (Redis does not roll scripts back) marks no run started or ended without
-- its events. It is read with HGETs: an HMGET's array reply costs Redis more than the HGETs it
-- would replace (docs/BENCHMARKS.md, "The append script").
--#include ensureMeta.lua
local ttlMs, maxLen, publish, now, retentionMs = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])

-- One append: its keys are KEYS[k + 1] to KEYS[k + 4], its arguments begin at ARGV[a].
local function appendOne(k, a)
  local metaKey, logKey, runKey, marksKey = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local epoch, seq = ensureMeta(metaKey, logKey, ARGV[a], ttlMs)
  local renew = redis.call('PTTL', logKey) < retentionMs
  local fenced = ARGV[a + 2] == '1'
  local appendId = ARGV[a + 5]
  local count = tonumber(ARGV[a + 4])
  local events = a + 6
  local skip = 0
  if fenced then
    if appendId ~= '' and redis.call('HGET', runKey, RUN.append) == appendId then
      local r = redis.call('HMGET', runKey, RUN.appended, RUN.skipped)
      return {epoch, tonumber(r[1]), tonumber(r[2] or '0')}
    end
    if redis.call('HGET', runKey, RUN.state) == STATE.ended then return {epoch, -1, 0} end
    if ARGV[events + 2] == 'agent_started' and redis.call('HGET', runKey, RUN.started) == '1' then skip = 1 end
  end
  -- `last` is the last seq assigned as a string (each seq is formatted once), `seq` as a number.
  local last = seq
  seq = tonumber(seq)
  local first = seq + 1
  local notification = {epoch .. ' ' .. now}
  for i = skip, count - 1 do
    seq = seq + 1
    last = tostring(seq)
    local e = events + 3 * i
    local json = ARGV[e] .. last .. ARGV[e + 1]
    local etype = ARGV[e + 2]
    redis.call('XADD', logKey, 'MAXLEN', maxLen, last .. '-0', LOG.json, json, LOG.type, etype, LOG.appendedAt, now)
    notification[#notification + 1] = last .. ' ' .. etype .. ' ' .. json
  end
  if count > skip then redis.call(publish, ARGV[a + 1], table.concat(notification, '\n')) end
  if fenced then
    if appendId == '' then
      redis.call('HSET', runKey, RUN.started, '1')
    else
      redis.call('HSET', runKey, RUN.started, '1', RUN.append, appendId, RUN.appended, first, RUN.skipped, skip)
    end
    if ARGV[a + 3] == '1' then redis.call('HSET', runKey, RUN.state, STATE.ended) end
    if redis.call('PTTL', runKey) < retentionMs then redis.call('PEXPIRE', runKey, ttlMs) end
  end
  redis.call('HSET', metaKey, META.seq, last)
  if renew then
    redis.call('PEXPIRE', metaKey, ttlMs)
    redis.call('PEXPIRE', logKey, ttlMs)
    redis.call('PEXPIRE', marksKey, ttlMs)
  end
  return {epoch, first, skip}
end

local replies = {}
local a = 6
for k = 0, #KEYS - 4, 4 do
  local ok, reply = pcall(appendOne, k, a)
  -- A failed redis.call raises its error reply (a table); anything else raised is a message.
  if not ok and type(reply) ~= 'table' then reply = redis.error_reply(tostring(reply)) end
  replies[#replies + 1] = reply
  a = a + 6 + 3 * tonumber(ARGV[a + 4])
end
return replies
