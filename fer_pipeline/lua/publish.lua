-- Atomically: count the entries the trim is about to drop that some group has not yet
-- been delivered (id > that group's last-delivered-id; every entry when there is no group
-- or when ARGV[2] == "all", used for streams whose acked entries are deleted), then XADD,
-- and count what was published per stream (the run summary compares these). Then, when
-- given, XACK + XDEL the entries these payloads answer (KEYS[4], group ARGV[4]): the worker's
-- labels and the ack of their crops land together, in one round trip, and a crash can no
-- longer leave labels published with their crops still pending (a duplicate on redelivery).
-- A counted ack (ARGV[5] == "counted", for a bundled stream) takes id, messages pairs and
-- lowers that stream's depth (hash KEYS[3]) by the messages its XDEL really removed.
-- ARGV: maxlen, 'all'|'groups', n payloads, ack group, 'plain'|'counted', payload x n,
--       ack id... (counted: id, count, ...)
-- (Loaded after helpers.lua: find_floor, unread, messages_in.)
local stream, stats, depth = KEYS[1], KEYS[2], KEYS[3]
local maxlen = tonumber(ARGV[1])
local count_all = ARGV[2] == 'all'
local n = tonumber(ARGV[3])
local first = 6
local ids = {}
if n > 0 then
  local len = redis.call('XLEN', stream)
  local excess = len + n - maxlen
  local lost = 0
  if excess > 0 then
    find_floor(stream, count_all, len)
    local old = {}
    if len > 0 then old = redis.call('XRANGE', stream, '-', '+', 'COUNT', math.min(excess, len)) end
    for _, e in ipairs(old) do
      if lost_if_trimmed(stream, e[1]) then lost = lost + 1 end
    end
    -- A batch larger than the room left trims some of its own new entries: unread by anyone.
    if excess > len then lost = lost + excess - len end
  end
  for i = first, first + n - 1 do
    ids[#ids + 1] = redis.call('XADD', stream, 'MAXLEN', maxlen, '*', 'd', ARGV[i])
  end
  if lost > 0 then redis.call('HINCRBY', stats, 'trimmed_unread:' .. stream, lost) end
  redis.call('HINCRBY', stats, 'published:' .. stream, n)
end
if KEYS[4] then
  local s, group, at = KEYS[4], ARGV[4], first + n
  if ARGV[5] == 'counted' then
    local gone = 0
    for i = at, #ARGV, 2 do
      redis.call('XACK', s, group, ARGV[i])
      if redis.call('XDEL', s, ARGV[i]) == 1 then gone = gone + tonumber(ARGV[i + 1]) end
    end
    if gone > 0 then
      local left = redis.call('HINCRBY', depth, s, -gone)
      if left < 0 or redis.call('XLEN', s) == 0 then redis.call('HSET', depth, s, 0) end
    end
  else
    -- unpack() in slices: Lua's C stack takes a few thousand values at most.
    for i = at, #ARGV, 1000 do
      local last = math.min(i + 999, #ARGV)
      redis.call('XACK', s, group, unpack(ARGV, i, last))
      redis.call('XDEL', s, unpack(ARGV, i, last))
    end
  end
end
return ids
