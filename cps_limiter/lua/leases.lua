-- Leases: how many leases of a concurrency rule are live now, on the Redis clock.
--
-- KEYS[1]  the lease set, a ZSET: member = lease id, score = expiry, unix milliseconds
-- Reply    {live, seconds until the next lease expires as a string ("0" when none is live)}
-- Writes nothing: an expired lease is only not counted; the next decision removes it.
local time = redis.call("TIME")
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local live = redis.call("ZCOUNT", KEYS[1], "(" .. string.format("%d", now_ms), "+inf")
if live == 0 then
  return {0, "0"}
end
local next = redis.call("ZRANGEBYSCORE", KEYS[1], "(" .. string.format("%d", now_ms), "+inf", "WITHSCORES", "LIMIT", 0, 1)
return {live, tostring((tonumber(next[2]) - now_ms) / 1000)}
