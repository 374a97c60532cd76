-- Delete up to ARGV[2] entries of a bundled stream older than ARGV[1] (an id, exclusive) and
-- lower its depth by the messages they held; returns {messages deleted, entries deleted}.
-- Retention calls it until fewer than ARGV[2] go: each call hands at most that many bodies
-- to Lua, so a large expiry never blocks Redis in one long script.
-- (Loaded after helpers.lua: find_floor, unread, messages_in.)
local stream, depth, cutoff, limit = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local old = redis.call('XRANGE', stream, '-', '(' .. cutoff, 'COUNT', limit)
local gone = 0
for _, e in ipairs(old) do
  gone = gone + messages_in(e[2])
  redis.call('XDEL', stream, e[1])
end
if #old > 0 then
  local left = redis.call('HINCRBY', depth, stream, -gone)
  if left < 0 or redis.call('XLEN', stream) == 0 then redis.call('HSET', depth, stream, 0) end
end
return {gone, #old}
