-- wrk script: a flood over the limit from many addresses. ADDRESSES client addresses
-- (198.18.0.0/15, the benchmarking range, sent as X-Forwarded-For from the trusted loopback
-- peer) take turns, every request to the URL wrk was given. The requests are built once per
-- thread in init(); request() only cycles through them, so the script costs wrk almost nothing.
-- Arguments: wrk ... -s flood.lua URL -- ADDRESSES   (default 10000, at most 131072)

local requests = {}
local n = 10000
local i = 0

function init(args)
   if args[1] then n = tonumber(args[1]) end
   i = math.random(0, n - 1)
   for k = 0, n - 1 do
      local ip = string.format("198.%d.%d.%d", 18 + math.floor(k / 65536), math.floor(k / 256) % 256, k % 256)
      requests[k] = wrk.format(nil, nil, { ["X-Forwarded-For"] = ip })
   end
end

function request()
   local r = requests[i]
   i = (i + 1) % n
   return r
end
