-- wrk script: guest traffic spread over 10,000 join tokens (load-000000 … load-009999) and
-- 10,000 client addresses (10.0.0.0/18, sent as X-Forwarded-For from the trusted loopback peer).
-- The requests are built once per thread in init(); request() only cycles through them, so the
-- script costs wrk almost nothing per request.

local requests = {}
local n = 10000
local i = 0

function init(args)
   -- Each thread starts at a different offset so threads do not walk in step.
   i = math.random(0, n - 1)
   for k = 0, n - 1 do
      local token = string.format("load-%06d", k)
      -- Tokens and addresses are paired with a stride so a token is not always seen from
      -- the same address.
      local a = (k * 7919) % n
      local ip = string.format("10.0.%d.%d", math.floor(a / 256), a % 256)
      requests[k] = wrk.format("GET", "/api/v1/events/" .. token, { ["X-Forwarded-For"] = ip })
   end
end

function request()
   local r = requests[i]
   i = (i + 1) % n
   return r
end
