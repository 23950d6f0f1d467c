-- Library, the common request of a single-rule script, which its grant block answers at once.
-- Put after lib_core.lua and before the grant block (cps_limiter/_scripts.py); defines only.
--
-- KEYS, ARGV  none of its own; ARGV's request as lib_core.lua names its positions
-- Units       the clock as server_clock gives it: seconds and microseconds
-- Defines     common_request(at, most) -> permits, ARGV[most]; or nil

-- The common request, which a grant block may answer at once: an acquire of 1 to ARGV[most]
-- permits by a limiter without an adaptive policy (its flag is the last ARGV). Its permits and
-- ARGV[most] as a number; nil for any other request. The request's offsets (PERMITS 0, MODE 3)
-- are written out: a function that used lib_core.lua's names would capture each as an upvalue,
-- built again on every call.
local function common_request(at, most)
  if ARGV[at + 3] ~= "acquire" or ARGV[#ARGV] == "1" then
    return nil
  end
  local want, bound = tonumber(ARGV[at]), tonumber(ARGV[most])
  if want <= 0 or want > bound then
    return nil
  end
  return want, bound
end
