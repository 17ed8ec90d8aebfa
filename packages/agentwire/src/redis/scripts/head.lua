-- head: where a user's log stands.
-- KEYS: meta, log
-- ARGV: newEpoch, ttlMs
-- Returns {epoch, seq}.
--#include ensureMeta.lua
return {epoch, seq}
