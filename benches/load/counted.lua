-- wrk script: a fixed number of requests, for counting what each costs (system calls under
-- strace). With one argument, the guests of guests.lua (10,000 join tokens from 10,000
-- addresses of 10.0.0.0/18 as X-Forwarded-For); with a second, every request carries that
-- X-Forwarded-For (one client: the denial path once it is over its limit). The thread stops
-- once REQUESTS answers have come back and says so with a "stopped" line on stderr (wrk itself
-- runs out its -d: the caller ends it with SIGINT, after which it prints its figures; the
-- requests still in flight on the other connections are answered but not counted, at most one
-- per connection).
-- Arguments: wrk ... -s counted.lua URL -- REQUESTS [X-FORWARDED-FOR]

local requests = {}
local n = 10000
local i = 0
local limit = 20000
local answered = 0
local stopped = false

function init(args)
   if args[1] then limit = tonumber(args[1]) end
   if args[2] then
      n = 1
      requests[0] = wrk.format("GET", "/api/v1/events/load-000001", { ["X-Forwarded-For"] = args[2] })
      return
   end
   i = math.random(0, n - 1)
   for k = 0, n - 1 do
      local a = (k * 7919) % n
      local ip = string.format("10.0.%d.%d", math.floor(a / 256), a % 256)
      requests[k] = wrk.format("GET", string.format("/api/v1/events/load-%06d", k), { ["X-Forwarded-For"] = ip })
   end
end

function request()
   local r = requests[i]
   i = (i + 1) % n
   return r
end

function response()
   answered = answered + 1
   if answered >= limit and not stopped then
      stopped = true
      io.stderr:write("stopped\n")
      io.stderr:flush()
      wrk.thread:stop()
   end
end
