-- Library, the request of a single-rule script and the durations of its full reply: what a
-- script needs past its grant block. Put after the grant block (cps_limiter/_scripts.py), after
-- lib_core.lua; defines only.
--
-- KEYS, ARGV  none of its own; ARGV's request as lib_core.lua names its positions
-- Units       seconds (max_wait) and microseconds (seconds' argument)
-- Defines     request_of(at, read) -> want, partial, max_wait, mode, seconds, micros, late
--             (the clock as server_clock gives it); seconds(us) -> a string, "0" when not positive

-- A single-rule script's request, from its strategy's *_REQUEST on: permits, partial, max_wait
-- (seconds), mode, then the clock as server_clock gives it, or as `read` holds it when a grant
-- block read it already ({seconds, micros, ...}). A peek decides for one permit and reserves
-- nothing.
local function request_of(at, read)
  local mode = ARGV[at + MODE]
  local want, partial, max_wait = 1, false, 0
  if mode ~= "peek" then
    want, partial, max_wait = tonumber(ARGV[at + PERMITS]), ARGV[at + PARTIAL] == "1", tonumber(ARGV[at + MAX_WAIT])
  end
  if read then
    return want, partial, max_wait, mode, read[1], read[2], nil
  end
  return want, partial, max_wait, mode, server_clock(ARGV[at + DEADLINE])
end

-- Durations leave as strings: Redis truncates Lua numbers to integers.
local function seconds(us)
  if us <= 0 then
    return "0"
  end
  return tostring(us / US)
end

