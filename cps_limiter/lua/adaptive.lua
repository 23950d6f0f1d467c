-- Adaptive limit: the limit in force, from the strategy's base limit, the operator's cap, the
-- carrier's refusals (AIMD) and the health report of the dialing host. The limiter puts this
-- prelude before each strategy's script, after lib_core.lua (Lua has no include), so the limit
-- in force costs no extra round trip, and one read: the cap, the AIMD state and the report
-- share a hash (adaptive_write.lua writes the cap and the report, the worker the refusals).
--
-- ARGV[#ARGV]      "1": adaptive; anything else: the base limit as it is, and the key and
--                  arguments below are not sent
-- KEYS[#KEYS]      the hash: cap (an integer that replaces the base limit) until cap_until
--                  (unix milliseconds on the Redis clock); cpu (percent), answer_rate (0..1)
--                  and at (unix seconds on the Redis clock): the health report; refused (calls
--                  the carrier refused since the last decrease: the worker's HINCRBY), aimd
--                  (the AIMD limit set by the last decrease) and aimd_at (its unix ms)
-- ARGV[#ARGV - 11] refusal hold (milliseconds): refusals reported this soon after a decrease
--                  answer calls granted before it, and are forgiven
-- ARGV[#ARGV - 10] refusal factor: on refusals the AIMD limit falls to this share of itself
-- ARGV[#ARGV - 9]  AIMD step: the share of the base limit it rises by each second without one
-- ARGV[#ARGV - 8]  AIMD floor: the share of the base limit it never falls below
-- ARGV[#ARGV - 7]  high CPU (percent) and ARGV[#ARGV - 6] the factor above it (0.5)
-- ARGV[#ARGV - 5]  critical CPU (percent) and ARGV[#ARGV - 4] the factor above it (0.25)
-- ARGV[#ARGV - 3]  answer-rate floor (0..1) and ARGV[#ARGV - 2] the factor below it
-- ARGV[#ARGV - 1]  seconds after which a health report is stale and ignored
-- Defines         adaptive_limit(limit, seconds, micros) -> the limit in force (integer >= 1);
--                 adaptive_limit(rate, seconds, micros, burst) -> a bucket's rate and burst in
--                 force: a cap replaces the rate, and the health factor scales rate and burst
--                 alike. seconds and micros are TIME's reply as numbers (lib_core.lua's
--                 server_clock). One function, as each a script defines is built on each call.
-- AIMD: pending refusals lower the limit (cap or base) to refusal factor x itself, at most once a
-- hold, and consume themselves; once the hold is over it rises by one step a second (no probing
-- higher while the old pace's refusals may still come), computed from aimd_at on each read, so
-- that a rise writes nothing; back at the top, the state goes.

local function adaptive_limit(limit, seconds, micros, burst)
  local n = #ARGV
  if ARGV[n] ~= "1" then
    return limit, burst
  end
  local key = KEYS[#KEYS]
  local state = redis.call(
    "HMGET", key, "cap", "cap_until", "cpu", "answer_rate", "at", "refused", "aimd", "aimd_at"
  )
  local cap, cap_until, at = state[1], tonumber(state[2]), tonumber(state[5])
  local refused, aimd = tonumber(state[6]), tonumber(state[7])
  if cap_until == nil and at == nil and refused == nil and aimd == nil then
    return limit, burst
  end
  local now_ms = seconds * 1000 + micros / 1000
  if cap_until == nil or cap_until <= now_ms then
    cap = nil
  else
    cap = tonumber(cap)
  end
  local top = cap or limit
  if refused ~= nil or aimd ~= nil then
    local aimd_at = tonumber(state[8])
    local current = top
    local since_hold = aimd_at and now_ms - aimd_at - tonumber(ARGV[n - 11])
    if aimd ~= nil and aimd_at ~= nil then
      -- None before the hold is over (nor on a failover's slower clock), then one a second.
      local steps = since_hold >= 0 and math.floor(since_hold / 1000) + 1 or 0
      current = math.min(aimd + steps * limit * tonumber(ARGV[n - 9]), top)
    end
    local held = aimd_at ~= nil and since_hold < 0
    if refused ~= nil and refused > 0 and not held then
      current = math.max(current * tonumber(ARGV[n - 10]), limit * tonumber(ARGV[n - 8]))
      local stamp = string.format("%d", math.floor(now_ms))
      redis.call("HSET", key, "aimd", tostring(current), "aimd_at", stamp)
      redis.call("HDEL", key, "refused")
    elseif refused ~= nil then
      redis.call("HDEL", key, "refused")
    elseif aimd ~= nil and current >= top then
      redis.call("HDEL", key, "aimd", "aimd_at")
    end
    if current < top then
      cap = current
    end
  end
  local factor = 1
  if at ~= nil and now_ms / 1000 - at <= tonumber(ARGV[n - 1]) then
    local cpu, answer_rate = tonumber(state[3]), tonumber(state[4])
    if cpu ~= nil and cpu > tonumber(ARGV[n - 5]) then
      factor = tonumber(ARGV[n - 4])
    elseif cpu ~= nil and cpu > tonumber(ARGV[n - 7]) then
      factor = tonumber(ARGV[n - 6])
    end
    if answer_rate ~= nil and answer_rate < tonumber(ARGV[n - 3]) then
      factor = factor * tonumber(ARGV[n - 2])
    end
  end
  if burst == nil then
    return math.max(math.floor((cap or limit) * factor), 1)
  end
  if cap == nil and factor == 1 then
    return limit, burst
  end
  local rate = (cap or limit) * factor
  return rate, math.max(math.floor(burst * rate / limit), 1)
end
