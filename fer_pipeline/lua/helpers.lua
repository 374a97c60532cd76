-- Lua shared by the scripts below: the oldest last-delivered-id of the stream's groups (the
-- floor: entries above it are unread by some group), and the message count of an entry.
local floor_ms, floor_seq = nil, nil
local function find_floor(stream, count_all, len)
  if count_all or len == 0 then return end
  local groups = redis.call('XINFO', 'GROUPS', stream)
  for _, g in ipairs(groups) do
    for i = 1, #g, 2 do
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
local function messages_in(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'n' then return tonumber(fields[i + 1]) or 1 end
  end
  return 1
end
