-- wrk script: the attack half of the mixed scenario. 1,000 guessing clients (172.16.0.0/22, sent
-- as X-Forwarded-For from the trusted loopback peer) each try join tokens never tried before
-- (guess-000001, guess-000002, ...: the stand-in answers 404), so the shield's guessing detection
-- bans each of them after its first max_failures guesses and answers the rest of the flood itself.

local n = 0
local clients = 1000

function request()
   n = n + 1
   local c = n % clients
   local ip = string.format("172.16.%d.%d", math.floor(c / 256), c % 256)
   return wrk.format("GET", string.format("/api/v1/events/guess-%07d", n), { ["X-Forwarded-For"] = ip })
end
