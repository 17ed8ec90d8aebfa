-- putMark: writes one thread's mark (renames and deletions of the log-folded history). With a
-- check, only while the stored mark is still the one the caller read: a rename must not write
-- over a deletion made since (the deleted thread would come back).
-- KEYS: marks
-- ARGV: field, mark JSON, ttlMs, check ('1' or '0'), expected mark JSON ('' when none was stored)
-- Returns 1 when written, 0 when the stored mark is another by now.

-- Marks compare by their fields (JSON of an older writer may order them otherwise); a stored
-- value that is not a mark counts as none, as the reader skips it.
local function asMark(json)
  local ok, mark = pcall(cjson.decode, json)
  if not ok or type(mark) ~= 'table' or type(mark.epoch) ~= 'string' then return nil end
  return mark
end

local function same(stored, expected)
  if stored == expected then return true end
  -- HGET answers false for a field that is not there.
  local a = nil
  if stored then a = asMark(stored) end
  if expected == '' then return a == nil end
  local b = asMark(expected)
  if a == nil or b == nil then return false end
  if a.epoch ~= b.epoch or a.title ~= b.title or a.deletedThrough ~= b.deletedThrough then return false end
  local r, s = a.deletedRuns or {}, b.deletedRuns or {}
  if type(r) ~= 'table' or type(s) ~= 'table' or #r ~= #s then return false end
  for i = 1, #r do
    if r[i] ~= s[i] then return false end
  end
  return true
end

if ARGV[4] == '1' and not same(redis.call('HGET', KEYS[1], ARGV[1]), ARGV[5]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
