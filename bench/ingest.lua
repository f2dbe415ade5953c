-- wrk script for scripts/bench-ingest: POST /v1/profiles with batches of
-- 100 profiles, each with its own email and phone (two PII fields), so that
-- every profile is a new one and sealpostd does the whole work per profile:
-- normalise, blind-index lookup, encrypt twice, insert.
--
-- Building 100 JSON objects per request in Lua would slow wrk itself down,
-- most of all against the reference (nginx answers faster than Lua builds
-- bodies), so each thread builds a pool of bodies in init(). Without "wrap"
-- a thread that used up its pool builds fresh bodies on the fly (every
-- profile stays new); with "wrap" it reuses the pool (for the reference,
-- which ignores bodies).
--
--   wrk -s bench/ingest.lua URL -- RUN_ID POOL_SIZE wrap|fresh KEY SECRET
--
-- done() prints one JSON object line on stdout, prefixed {"wrk":...}:
-- requests, the 200s, the profiles they acknowledged, errors and latency
-- percentiles in microseconds.

local threads = {}
local thread_no = 0

function setup(thread)
  thread_no = thread_no + 1
  thread:set("tid", thread_no)
  table.insert(threads, thread)
end

local run_id, pool_size, wrap, my_tid
local pool = {}
local next_body = 0
local made = 0
local headers = {}
ok_requests = 0
other_requests = 0

local function body(n)
  local parts = {}
  for i = 1, 100 do
    local k = n * 100 + i
    parts[i] = string.format(
      '{"attributes":{"email":"b%s.t%d.%d@bench.example","phone":"+1%d%09d","plan":"bench","n":%d}}',
      run_id, my_tid, k, 2 + my_tid, k, k)
  end
  return '{"profiles":[' .. table.concat(parts, ",") .. ']}'
end

function init(args)
  run_id = args[1] or "0"
  pool_size = tonumber(args[2] or "1000")
  wrap = (args[3] == "wrap")
  my_tid = _G.tid or 1
  headers["Content-Type"] = "application/json"
  if args[4] and args[4] ~= "" then
    headers["X-Client-Access-Key"] = args[4]
    headers["X-Api-Secret"] = args[5]
  end
  for n = 1, pool_size do
    pool[n] = body(n)
  end
  made = pool_size
end

function request()
  next_body = next_body + 1
  local b
  if next_body <= pool_size then
    b = pool[next_body]
  elseif wrap then
    b = pool[(next_body - 1) % pool_size + 1]
  else
    made = made + 1
    b = body(made)
  end
  return wrk.format("POST", "/v1/profiles", headers, b)
end

function response(status, hdrs, resp_body)
  if status == 200 then
    ok_requests = ok_requests + 1
  else
    other_requests = other_requests + 1
  end
end

function done(summary, latency, requests)
  local ok_total, other_total = 0, 0
  for _, t in ipairs(threads) do
    ok_total = ok_total + (t:get("ok_requests") or 0)
    other_total = other_total + (t:get("other_requests") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    '{"wrk":1,"duration_us":%d,"requests":%d,"ok_requests":%d,"other_status":%d,"profiles_acked":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.duration, summary.requests, ok_total, other_total, ok_total * 100,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
