-- Writes the hash adaptive.lua reads: the operator's cap, or the health report, stamped with the
-- Redis clock. The cap and the report share the hash so that a decision reads them at once; the
-- hash lives as long as the longer of the two needs it.
--
-- KEYS[1]  the hash (fields: see adaptive.lua)
-- ARGV[1]  what: "cap", "clear_cap" or "health"
--          cap:       ARGV[2] the cap (integer >= 1), ARGV[3] its life (milliseconds >= 1)
--          clear_cap: nothing more
--          health:    ARGV[2] cpu (percent), ARGV[3] answer_rate (0..1, "" when not reported),
--                     ARGV[4] how long the report is kept (milliseconds >= 1)
-- Reply    1
local time = redis.call("TIME")
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local what = ARGV[1]

local function keep_for(ms)
  -- PTTL is -1 without an expiry and -2 without the key: either way the new life decides.
  local left = redis.call("PTTL", KEYS[1])
  redis.call("PEXPIRE", KEYS[1], math.max(left, ms))
end

if what == "cap" then
  local life = tonumber(ARGV[3])
  redis.call("HSET", KEYS[1], "cap", ARGV[2], "cap_until", string.format("%.0f", now_ms + life))
  keep_for(life)
elseif what == "clear_cap" then
  redis.call("HDEL", KEYS[1], "cap", "cap_until")
elseif what == "health" then
  -- The previous report goes whole: an answer rate not reported now is not the old one.
  redis.call("HDEL", KEYS[1], "cpu", "answer_rate", "at")
  local at = string.format("%d.%06d", tonumber(time[1]), tonumber(time[2]))
  redis.call("HSET", KEYS[1], "cpu", ARGV[2], "at", at)
  if ARGV[3] ~= "" then
    redis.call("HSET", KEYS[1], "answer_rate", ARGV[3])
  end
  keep_for(tonumber(ARGV[4]))
else
  return redis.error_reply("ERR adaptive_write.lua: unknown write " .. tostring(what))
end
return 1
