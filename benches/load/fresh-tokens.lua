-- wrk script: every request carries a join token never seen before (load-1, load-2, ...), to fill
-- a per-token limit's key table. With wrk -t1 the count is exact; with more threads each thread
-- counts from its own offset. The thread stops after TOKENS requests (default 1,000,000; set it
-- with: wrk ... -s fresh-tokens.lua URL -- TOKENS).

local n = 0
local limit = 1000000
local offset = 0

local started = os.time()
local stopped = false

function init(args)
   started = os.time()
   if args[1] then limit = tonumber(args[1]) end
   offset = math.random(0, 999) * 100000000
end

function request()
   n = n + 1
   return wrk.format("GET", "/api/v1/events/load-" .. (offset + n))
end

function response()
   if n >= limit and not stopped then
      stopped = true
      -- wrk runs out its -d anyway; say when the last request was answered (1 s resolution).
      print(string.format("stopped after %d s", os.time() - started))
      wrk.thread:stop()
   end
end
