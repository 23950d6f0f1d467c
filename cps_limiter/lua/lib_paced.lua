-- Library, the paced window's slot search over the window counters (lib_windows.lua) and the
-- pacer (lib_pacer.lua): the paced window and the rules' paced rule find their slots with it.
-- Put after lib_windows.lua (cps_limiter/_scripts.py); defines only.
--
-- KEYS     none of its own
-- Units    moments, spacing and max_wait_us: microseconds since EPOCH
-- Defines  paced_slots(w, limit, spacing, from, horizon, want, now) -> slots, first, next;
--          paced_retry(first, need, spacing, max_wait_us, now) -> a string;
--          paced_offsets(slots, n) -> a string

-- The paced slots: from `from` on, `spacing` apart, skipping windows already full, at most
-- `want` of them and none after `horizon`; each is counted in w.used as it is found. Returns
-- the slots, the first free moment (nil when none lies within MAX_WINDOWS_AHEAD windows) and
-- the moment after the last slot.
local function paced_slots(w, limit, spacing, from, horizon, want, now)
  local last_window = window_start(w, now) + MAX_WINDOWS_AHEAD * w.us
  local slots, first, t = {}, nil, from
  while #slots < want and t < last_window do
    local start = window_start(w, t)
    if window_used(w, start) >= limit then
      t = start + w.us
    else
      first = first or t
      if t > horizon then
        break
      end
      slots[#slots + 1] = t
      w.used[start] = w.used[start] + 1
      t = t + spacing
    end
  end
  return slots, first, t
end

-- A paced refusal's retry_after: when the first free slot comes, if the request's slots fit
-- within max_wait from there; never ("inf") otherwise.
local function paced_retry(first, need, spacing, max_wait_us, now)
  if first ~= nil and (need - 1) * spacing <= max_wait_us then
    return seconds(first - now)
  end
  return "inf"
end

-- The later slots' moments, microseconds after the first, space-separated ("" for one).
local function paced_offsets(slots, n)
  local offsets = {}
  for j = 2, n do
    offsets[#offsets + 1] = string.format("%d", slots[j] - slots[1])
  end
  return table.concat(offsets, " ")
end
