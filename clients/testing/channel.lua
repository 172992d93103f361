-- The recoverable-channel protocol in one script, for the SDKs' tests: publishes a run of
-- events on one channel, exactly once, numbered, with their history and state, leaving in
-- Redis what the daemon's channel transactions leave (src/publish/recoverable/; the daemon
-- numbers in Rust and sends MULTI/EXEC, which costs Redis about half as much). The SDK tests
-- use it to publish as the daemon does on a Redis Cluster without running the daemon.
--
-- KEYS: sluice:meta:{ch}, then sluice:history:{ch} if history is kept (max_len > 0), then
--       sluice:state:{ch} if the route keeps state. Only keys the channel has: on a Redis
--       Cluster, a key that does not exist makes a call on a migrating slot answer TRYAGAIN
--       until the slot has moved.
-- ARGV: 1 channel, 2 epoch to start if the channel has none, 3 history max_len (0: none),
--       4 history ttl in ms, 5 batch origin ('' in logical mode), 6 '1' to keep state,
--       then four per event: order key, record id, '1' if it removes the record, payload
--       (a JSON object whose '{' the seq and epoch are written after).
-- Returns: { epoch started (0/1), history entries trimmed, then per event the number of
--            receivers, or -1 when Redis already had it }.
local ch, maxlen, ttl, origin = ARGV[1], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local keep = ARGV[6] == '1'
local meta, hist, state, k = KEYS[1], nil, nil, 2
if maxlen > 0 then hist, k = KEYS[k], k + 1 end
if keep then state = KEYS[k] end
local m = redis.call('HMGET', meta, 'epoch', 'seq', 'pos', 'origin', 'ids')
local epoch, seq, pos, ids = m[1], tonumber(m[2]), m[3] or '', m[5] or ''
local started = 0
if not epoch then
  -- the channel's state is gone (new, flushed, restarted without persistence, evicted)
  epoch, seq, pos, ids, started = ARGV[2], 0, '', '', 1
  if hist then redis.call('DEL', hist) end
  if state then redis.call('DEL', state) end
end
-- Logical mode: order keys grow with commit order, so one bound tells what was published.
-- Trigger mode: ids are not in commit order; the ids published since the batch's origin are.
local seen = {}
if origin ~= '' then
  if m[4] == origin then
    for id in string.gmatch(ids, '[^,]+') do seen[id] = true end
  else
    ids = ''
  end
end
local out = { started, 0 }
local head = '","'
for i = 7, #ARGV, 4 do
  local key = ARGV[i]
  local dup
  if origin ~= '' then dup = seen[key] else dup = key <= pos end
  if dup then
    out[#out + 1] = -1
  else
    seq = seq + 1
    local msg = '{"seq":' .. seq .. ',"epoch":"' .. epoch .. '",' .. string.sub(ARGV[i + 3], 2)
    out[#out + 1] = redis.call('PUBLISH', ch, msg)
    if maxlen > 0 then redis.call('XADD', hist, seq .. '-0', 'event', msg) end
    if keep and ARGV[i + 1] ~= '' then
      if ARGV[i + 2] == '1' then
        redis.call('HDEL', state, ARGV[i + 1])
      else
        redis.call('HSET', state, ARGV[i + 1], msg)
      end
    end
    if origin ~= '' then
      seen[key] = true
      ids = ids .. key .. ','
    else
      pos = key
    end
  end
end
if maxlen > 0 and seq > 0 then
  out[2] = redis.call('XTRIM', hist, 'MAXLEN', '~', maxlen)
  redis.call('PEXPIRE', hist, ttl)
end
redis.call('HSET', meta, 'epoch', epoch, 'seq', seq, 'pos', pos, 'origin', origin, 'ids', ids)
return out
