-- wrk script: the attack half of the mixed scenario. 1,000 guessing clients (172.S.0.0/22, sent
-- as X-Forwarded-For from the trusted loopback peer; S is the argument, default 16, so each
-- round of the scenario can bring fresh clients) each try join tokens never tried before
-- (guess-000001, guess-000002, ...: the stand-in answers 404), so the shield's guessing detection
-- bans each of them after its first max_failures guesses and answers the rest of the flood itself.
-- Arguments: wrk ... -s mixed-attack.lua URL -- S

local n = 0
local clients = 1000
local second = 16

function init(args)
   if args[1] then second = tonumber(args[1]) end
end

function request()
   n = n + 1
   local c = n % clients
   local ip = string.format("172.%d.%d.%d", second, math.floor(c / 256), c % 256)
   return wrk.format("GET", string.format("/api/v1/events/guess-%07d", n), { ["X-Forwarded-For"] = ip })
end
