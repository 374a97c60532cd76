-- A bundled stream's bookkeeping, run in the same MULTI right after the XADDs of its new
-- bundles (which go straight to Redis: passed through Lua, a 150 KB bundle costs more in
-- copies than the XADD itself). MAXLEN counts messages: whole bundles are trimmed, oldest
-- first (this publish's own too), until the stream holds at most ``maxlen``; the newest
-- bundle always stays, so one bundle larger than ``maxlen`` is kept alone. Unread trimmed
-- messages are counted as above; the depth hash (KEYS[3]) keeps the messages held.
-- ARGV: maxlen, 'all'|'groups', bundles just added, messages in them. Returns the new depth.
-- (Loaded after helpers.lua: find_floor, unread, messages_in.)
local stream, stats, depth = KEYS[1], KEYS[2], KEYS[3]
local maxlen, count_all = tonumber(ARGV[1]), ARGV[2] == 'all'
local added, adding = tonumber(ARGV[3]), tonumber(ARGV[4])
local len = redis.call('XLEN', stream)
local before = len - added
-- Messages held before this publish; with no record (the key deleted, a stream written
-- before bundles) one per entry, which is exact for single-message entries.
local held = 0
if before > 0 then held = math.max(0, tonumber(redis.call('HGET', depth, stream) or before) or before) end
local fresh = adding
local lost, drop = 0, 0
local excess = held + fresh - maxlen
if excess > 0 and len > 1 then
  find_floor(stream, count_all, len)
  -- XRANGE hands each bundle's whole body to Lua: ask for one, then a few more at a time.
  local from, count = '-', 1
  while excess > 0 and drop < len - 1 do
    local old = redis.call('XRANGE', stream, from, '+', 'COUNT', math.min(count, len - 1 - drop))
    count = math.min(count * 2, 16)
    if #old == 0 then break end
    for _, e in ipairs(old) do
      local k = messages_in(e[2])
      if lost_if_trimmed(stream, e[1]) then lost = lost + k end
      if drop < before then held = held - k else fresh = fresh - k end
      drop, excess, from = drop + 1, excess - k, '(' .. e[1]
      if excess <= 0 or drop >= len - 1 then break end
    end
  end
  redis.call('XTRIM', stream, 'MAXLEN', len - drop)
  -- Every older bundle gone: whatever the record said, none of their messages is left.
  if drop >= before then held = 0 end
end
held = math.max(0, held) + fresh
redis.call('HSET', depth, stream, held)
if lost > 0 then redis.call('HINCRBY', stats, 'trimmed_unread:' .. stream, lost) end
redis.call('HINCRBY', stats, 'published:' .. stream, adding)
return held
