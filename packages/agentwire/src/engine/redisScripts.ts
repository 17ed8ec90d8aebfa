/**
 * Lua scripts of the Redis engine. Each runs atomically, so two nodes can never assign the
 * same seq, and an epoch is created exactly once per unbroken history of a user's log.
 */

/** Creates the log's meta if it is missing (log lost or new) and returns epoch and seq. */
const ENSURE_META = `
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
  redis.call('DEL', KEYS[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end`;

/** KEYS: meta, log. ARGV: newEpoch, ttlMs. Returns {epoch, seq}. */
export const HEAD_SCRIPT = `${ENSURE_META}
return {epoch, redis.call('HGET', KEYS[1], 'seq')}`;

/**
 * KEYS: meta, log, run record (or a dummy key in the same slot when no fence is wanted).
 * ARGV: newEpoch, ttlMs, maxLen, channel, publish command, now, fence ('1' checks that the run
 * record is not ended, and marks it started), terminal ('1' marks it ended), count, append id ('' for none), then per
 * event: json head, json tail, type. Each event's JSON is head .. seq .. tail, so the seq is
 * written into the event here, where it is assigned. One notification carries the whole batch
 * (see parseNotification in redisEngine.ts). Returns {epoch, firstSeq, skipped} or
 * {epoch, -1, 0} when fenced off. A fenced append whose id is the run's last applied one (a
 * retry after a lost reply) is not applied again: it returns what it got then. A fenced append
 * that leads with agent_started for a run that already started skips it (skipped = 1): a run
 * whose first append was applied but never confirmed re-sends agent_started with its failure.
 */
export const APPEND_SCRIPT = `${ENSURE_META}
local skip = 0
if ARGV[7] == '1' then
  if ARGV[10] ~= '' and redis.call('HGET', KEYS[3], 'append') == ARGV[10] then
    local r = redis.call('HMGET', KEYS[3], 'appended', 'skipped')
    return {epoch, tonumber(r[1]), tonumber(r[2] or '0')}
  end
  if redis.call('HGET', KEYS[3], 'state') == 'ended' then return {epoch, -1, 0} end
  if ARGV[13] == 'agent_started' and redis.call('HGET', KEYS[3], 'started') == '1' then skip = 1 end
  redis.call('HSET', KEYS[3], 'started', '1')
  if ARGV[8] == '1' then redis.call('HSET', KEYS[3], 'state', 'ended') end
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
local first = seq + 1
local count = tonumber(ARGV[9])
local notification = {epoch .. ' ' .. ARGV[6]}
for i = skip, count - 1 do
  seq = seq + 1
  local json = ARGV[11 + 3 * i] .. seq .. ARGV[12 + 3 * i]
  local etype = ARGV[13 + 3 * i]
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], seq .. '-0', 'j', json, 't', etype, 'a', ARGV[6])
  notification[#notification + 1] = seq .. ' ' .. etype .. ' ' .. json
end
if count > skip then redis.call(ARGV[5], ARGV[4], table.concat(notification, '\\n')) end
if ARGV[7] == '1' and ARGV[10] ~= '' then
  redis.call('HSET', KEYS[3], 'append', ARGV[10], 'appended', first, 'skipped', skip)
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
redis.call('HSET', KEYS[1], 'seq', seq)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {epoch, first, skip}`;
