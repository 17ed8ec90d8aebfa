-- cancel: marks a run's cancel request on its record, if it is the user's and live.
-- KEYS: run record
-- ARGV: user
-- user is encoded (encodeId).
-- Returns {'not_found'}, {'forbidden'}, {'queued', thread} or {'running', thread, owner}.
local r = redis.call('HMGET', KEYS[1], RUN.user, RUN.state, RUN.owner, RUN.thread)
if not r[1] then return {'not_found'} end
if r[1] ~= ARGV[1] then return {'forbidden'} end
if r[2] == STATE.ended then return {'not_found'} end
if r[2] == STATE.queued then
  redis.call('HSET', KEYS[1], RUN.cancel, '1')
  return {'queued', r[4]}
end
-- Also noted on the record: the owner's lease renewal sees it if the request over pub/sub is lost.
redis.call('HSET', KEYS[1], RUN.cancel, '1')
return {'running', r[4], r[3]}
