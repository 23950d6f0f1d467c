-- Adaptive limit: the limit in force, from the strategy's base limit, the operator's cap and the
-- health report of the dialing host. The limiter puts this prelude before each strategy's
-- script (Lua has no include), so the limit in force costs no extra round trip.
--
-- ARGV[#ARGV]      "1": adaptive; anything else: the base limit as it is, and the keys and
--                  arguments below are not sent
-- KEYS[#KEYS - 1]  the operator's cap: an integer that replaces the base limit while the key
--                  lives (it carries its own expiry)
-- KEYS[#KEYS]      the health report: a hash {cpu = percent, answer_rate = 0..1, at = unix
--                  seconds on the Redis clock}
-- ARGV[#ARGV - 7]  high CPU (percent) and ARGV[#ARGV - 6] the factor above it (0.5)
-- ARGV[#ARGV - 5]  critical CPU (percent) and ARGV[#ARGV - 4] the factor above it (0.25)
-- ARGV[#ARGV - 3]  answer-rate floor (0..1) and ARGV[#ARGV - 2] the factor below it
-- ARGV[#ARGV - 1]  seconds after which a health report is stale and ignored
-- Defines         adaptive_factor(now_seconds) -> (factor for the base limit, cap or nil)
--                 past_deadline(time, deadline) -> an error reply when TIME is past the
--                 caller's deadline, else nil: a request that waited on a stalled server while
--                 its caller gave up must not take capacity when the server resumes

local function adaptive_factor(now)
  local n = #ARGV
  if ARGV[n] ~= "1" then
    return 1, nil
  end
  local cap = tonumber(redis.call("GET", KEYS[#KEYS - 1]) or "")
  local health = redis.call("HMGET", KEYS[#KEYS], "cpu", "answer_rate", "at")
  local cpu, answer_rate, at = tonumber(health[1]), tonumber(health[2]), tonumber(health[3])
  local factor = 1
  if at ~= nil and now - at <= tonumber(ARGV[n - 1]) then
    if cpu ~= nil and cpu > tonumber(ARGV[n - 5]) then
      factor = tonumber(ARGV[n - 4])
    elseif cpu ~= nil and cpu > tonumber(ARGV[n - 7]) then
      factor = tonumber(ARGV[n - 6])
    end
    if answer_rate ~= nil and answer_rate < tonumber(ARGV[n - 3]) then
      factor = factor * tonumber(ARGV[n - 2])
    end
  end
  return factor, cap
end


local function past_deadline(time, deadline)
  local at = tonumber(deadline) or 0
  if at > 0 and tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000 > at then
    return redis.error_reply("LATE the caller's deadline passed before Redis ran the request")
  end
  return nil
end
