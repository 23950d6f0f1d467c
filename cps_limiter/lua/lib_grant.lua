-- Library, the common request of a single-rule script, which its grant block answers at once.
-- Put after lib_core.lua and before the grant block (cps_limiter/_scripts.py); defines only.
--
-- KEYS, ARGV  none of its own; ARGV's request as lib_core.lua names its positions
-- Units       the clock as server_clock gives it: seconds and microseconds
-- Defines     common_request(at, most) -> permits, ARGV[most], seconds, micros, late, or nil


