-- Fragment (included by putMark.lua and pruneMarks.lua, not a script of its own): `same`, whether
-- the stored mark (HGET's answer) is the expected one (mark JSON, '' for none).
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
