-- head: where a user's log stands.
-- KEYS: meta, log
-- ARGV: newEpoch, ttlMs
-- Returns {epoch, seq}.
--#include ensureMeta.lua
local epoch, seq = ensureMeta(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
return {epoch, seq}
