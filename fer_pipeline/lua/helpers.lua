-- Lua shared by the scripts below: the oldest last-delivered-id of the stream's groups (the
-- floor: entries above it are unread by some group), whether an entry is lost if trimmed
-- (unread by some group, or delivered and still unacknowledged in one), and the message
-- count of an entry.
local floor_ms, floor_seq = nil, nil
local group_names = {}
local function find_floor(stream, count_all, len)
  if count_all or len == 0 then return end
  local groups = redis.call('XINFO', 'GROUPS', stream)
  for _, g in ipairs(groups) do
    for i = 1, #g, 2 do
      if g[i] == 'name' then group_names[#group_names + 1] = g[i + 1] end
      if g[i] == 'last-delivered-id' then
        local ms, seq = string.match(g[i + 1], '(%d+)-(%d+)')
        ms, seq = tonumber(ms), tonumber(seq)
        if floor_ms == nil or ms < floor_ms or (ms == floor_ms and seq < floor_seq) then
          floor_ms, floor_seq = ms, seq
        end
      end
    end
  end
end
local function unread(id)
  if floor_ms == nil then return true end
  local ms, seq = string.match(id, '(%d+)-(%d+)')
  ms, seq = tonumber(ms), tonumber(seq)
  return ms > floor_ms or (ms == floor_ms and seq > floor_seq)
end
-- Trimming an entry loses it when some group has not read it, or read it and not acked it
-- (its consumer died before finishing: the entry would have been reclaimed).
local function lost_if_trimmed(stream, id)
  if unread(id) then return true end
  for _, name in ipairs(group_names) do
    if #redis.call('XPENDING', stream, name, id, id, 1) > 0 then return true end
  end
  return false
end
local function messages_in(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'n' then return tonumber(fields[i + 1]) or 1 end
  end
  return 1
end
