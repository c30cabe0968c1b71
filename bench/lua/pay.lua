-- Pay phase on HQ's sandbox channel: each wrk thread (one connection) pays its share of
-- the pay URLs the checkout phase wrote: GET the site's pay link (HQ opens the payment;
-- session + CSRF), POST the pay page's form.
-- HQ notifies the shop, which fulfils through HQ; the bench counts delivered orders.
-- args: <pay-urls file> <number of wrk threads>
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  local all = {}
  for line in io.lines(args[1]) do
    local path = string.match(line, "^https?://[^/]+(/.*)$") or line
    table.insert(all, path)
  end
  mine = {}
  local count = tonumber(args[2])
  for i, p in ipairs(all) do
    if (i - 1) % count == id then table.insert(mine, p) end
  end
  next_i, csrf, action, cookie, step = 1, nil, nil, nil, "get"
end

local function cookie_of(headers, current)
  local sc = headers["set-cookie"] or headers["Set-Cookie"]
  if sc then return string.match(sc, "^([^;]+)") end
  return current
end

function request()
  local path = mine[next_i]
  if path == nil then  -- this thread's share is paid: idle on a cheap page
    wrk.thread:stop()
    return wrk.format("GET", "/")
  end
  local h = {}
  if cookie then h["Cookie"] = cookie end
  if step == "get" then
    return wrk.format("GET", path, h)
  end
  h["Content-Type"] = "application/x-www-form-urlencoded"
  return wrk.format("POST", action, h, "csrf=" .. csrf)
end

function response(status, headers, body)
  if mine[next_i] == nil then return end
  cookie = cookie_of(headers, cookie)
  if step == "get" then
    csrf = string.match(body, 'name="csrf" value="([^"]+)"')
    action = string.match(body, '<form method="post" action="([^"]+)"')
    step = "post"
  else
    step = "get"
    next_i = next_i + 1
  end
end
