-- Library, the core of the decision scripts: the constants, the argument positions and the
-- clock that every decision script shares. Lua has no include, so the limiter puts the
-- library's parts a script needs around it (cps_limiter/_scripts.py), as it puts adaptive.lua;
-- a part only defines, it reads no key and returns nothing. A function is built again on every
-- call of a script that defines it, so a grant block comes right after the few parts it uses,
-- and the others after it: the common request builds no function it does not call.
--
-- KEYS, ARGV  none of its own; the names below say where the scripts' arguments stand
-- Units       moments on the Redis clock, in microseconds or seconds since EPOCH (as named)
-- Defines     EPOCH, US, MAX_WINDOWS_AHEAD; the ARGV positions (a strategy's
--             *_REQUEST, and the request's fields as offsets from it); server_clock(deadline)
--             -> seconds, micros, error reply or nil

-- Counting from a recent epoch keeps every microsecond moment an exact integer in a double and
-- a moment in seconds precise below the microsecond.
local EPOCH = 1767225600
local US = 1000000
-- How many windows ahead a reservation may look for room; bounds the work of one call.
local MAX_WINDOWS_AHEAD = 64

-- ARGV of the single-rule scripts: the strategy's parameters, then the request from REQUEST on.
local LIMIT, WINDOW, HEADROOM = 1, 2, 3
local RATE, BURST, PERIOD = 1, 2, 3
-- The request, as offsets from the strategy's REQUEST: permits (integer >= 0), partial ("1":
-- grant what is free, up to permits), max_wait (seconds a grant may be reserved ahead), mode
-- ("acquire", "peek" or "reset") and deadline (the caller's, unix milliseconds, "0": none).
local PERMITS, PARTIAL, MAX_WAIT, MODE, DEADLINE = 0, 1, 2, 3, 4
local FIXED_REQUEST, SLIDING_REQUEST, TOKEN_REQUEST, PACED_REQUEST = 3, 3, 4, 4

-- TIME's reply parsed once (each tonumber is a noticeable share of a short script), and the
-- refusal of a request that waited on a stalled server while its caller gave up: it must not
-- take capacity when the server resumes.
local function server_clock(deadline)
  local time = redis.call("TIME")
  local sec, micros = tonumber(time[1]), tonumber(time[2])
  local at = tonumber(deadline) or 0
  if at > 0 and sec * 1000 + micros / 1000 > at then
    return sec, micros, redis.error_reply("LATE the caller's deadline passed before Redis ran the request")
  end
  return sec, micros, nil
end
