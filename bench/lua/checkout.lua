-- Checkout load on the sub-site: one connection per wrk thread, so this thread's Lua
-- state is that connection's customer (its session cookie and CSRF token).
-- args: <pay-urls output file> [<delay ms between checkouts>]
-- GET /p/bench-10 once (session + CSRF), then POST /checkout repeatedly; each 303's
-- Location (HQ's pay page) is kept, and done() writes them all for the pay phase.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local function cookie_of(headers, current)
  local sc = headers["set-cookie"] or headers["Set-Cookie"]
  if sc then return string.match(sc, "^([^;]+)") end
  return current
end

function init(args)
  out_file = args[1]
  pause = tonumber(args[2] or "0")
  csrf, cookie, n, failures = nil, nil, 0, 0
  urls = {}
end

function delay()
  return pause
end

function request()
  if csrf == nil then
    return wrk.format("GET", "/p/bench-10")
  end
  n = n + 1
  local body = "csrf=" .. csrf .. "&product=bench-10&contact=b" .. id .. "x" .. n ..
      "%40example.com"
  return wrk.format("POST", "/checkout", {
    ["Content-Type"] = "application/x-www-form-urlencoded", ["Cookie"] = cookie}, body)
end

function response(status, headers, body)
  if csrf == nil then
    csrf = string.match(body, 'name="csrf" value="([^"]+)"')
    cookie = cookie_of(headers, cookie)
    return
  end
  if status == 303 then
    table.insert(urls, headers["location"] or headers["Location"])
    cookie = cookie_of(headers, cookie)
  else
    failures = failures + 1
  end
end

function done(summary, latency, requests)
  -- done() runs in the main Lua state, which has no init() args: ask a thread.
  local out_file = threads[1]:get("out_file")
  if out_file == nil or out_file == "" then return end
  local f = assert(io.open(out_file, "w"))
  local bad = 0
  for _, t in ipairs(threads) do
    for _, u in ipairs(t:get("urls")) do f:write(u, "\n") end
    bad = bad + t:get("failures")
  end
  f:close()
  io.stderr:write("checkout failures: ", bad, "\n")
end
