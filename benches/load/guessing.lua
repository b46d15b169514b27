-- wrk script: a token guesser spread over many addresses of one IPv6 /48. Every request tries a
-- token never tried before (guess-000001, guess-000002, ...: the stand-in answers 404), from one
-- of ADDRESSES rotating X-Forwarded-For addresses 2001:db8:abcd:N::1 (each its own /64, so its
-- own client, all in 2001:db8:abcd::/48). The thread stops after TOKENS requests.
-- Arguments: wrk ... -s guessing.lua URL -- TOKENS ADDRESSES   (defaults 100000 50000)

local n = 0
local limit = 100000
local addresses = 50000

local started = os.time()
local stopped = false

function init(args)
   started = os.time()
   if args[1] then limit = tonumber(args[1]) end
   if args[2] then addresses = tonumber(args[2]) end
end

function request()
   n = n + 1
   local ip = string.format("2001:db8:abcd:%x::1", n % addresses)
   return wrk.format("GET", string.format("/api/v1/events/guess-%06d", n), { ["X-Forwarded-For"] = ip })
end

function response()
   if n >= limit and not stopped then
      stopped = true
      -- wrk runs out its -d anyway; say when the last request was answered (1 s resolution).
      print(string.format("stopped after %d s", os.time() - started))
      wrk.thread:stop()
   end
end
