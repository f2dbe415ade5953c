-- wrk script for scripts/bench-callbacks: POSTs delivery reports sealed
-- ahead of time by sp_callback_gen (one per message, each with its own
-- webhook-id), so that every request is a distinct callback and wrk spends
-- its time sending. Thread k of n takes lines k, k+n, k+2n, ... of the file;
-- a thread that used up its share starts over, and what it sends then are
-- repeats, which sealpostd must answer "duplicate" without counting them
-- (the counts below tell the two apart).
--
--   wrk -s bench/callbacks.lua URL -- REQUESTS_FILE PATH THREADS
--
-- done() prints one JSON object line on stdout, prefixed {"wrk":...}:
-- requests, accepted (200 without "duplicate"), duplicates, other
-- statuses, errors and latency percentiles in microseconds.

local threads = {}
local thread_no = 0

function setup(thread)
  thread_no = thread_no + 1
  thread:set("tid", thread_no)
  table.insert(threads, thread)
end

local pool = {}
local pool_size = 0
local next_req = 0
accepted = 0
duplicates = 0
other_status = 0

function init(args)
  local file, path, nthreads = args[1], args[2], tonumber(args[3] or "1")
  local my_tid = _G.tid or 1
  local n = 0
  for line in io.lines(file) do
    n = n + 1
    if (n - 1) % nthreads == my_tid - 1 then
      local wid, ts, sig, iv, ver, body = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)\t(.*)$")
      if wid then
        local headers = {
          ["Content-Type"] = "application/json",
          ["webhook-id"] = wid,
          ["webhook-timestamp"] = ts,
          ["webhook-signature"] = sig,
          ["X-AES-IV"] = iv,
          ["X-AES-KEY-VERSION"] = ver,
          ["X-AES-ALGORITHM"] = "AES-256-GCM",
        }
        pool_size = pool_size + 1
        pool[pool_size] = wrk.format("POST", path, headers, body)
      end
    end
  end
  if pool_size == 0 then
    error("no requests for this thread in " .. file)
  end
end

function request()
  next_req = next_req + 1
  return pool[(next_req - 1) % pool_size + 1]
end

function response(status, hdrs, body)
  if status == 200 then
    if body and body:find("duplicate", 1, true) then
      duplicates = duplicates + 1
    else
      accepted = accepted + 1
    end
  else
    other_status = other_status + 1
  end
end

function done(summary, latency, requests)
  local acc, dup, oth = 0, 0, 0
  for _, t in ipairs(threads) do
    acc = acc + (t:get("accepted") or 0)
    dup = dup + (t:get("duplicates") or 0)
    oth = oth + (t:get("other_status") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    '{"wrk":1,"duration_us":%d,"requests":%d,"accepted":%d,"duplicates":%d,"other_status":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.duration, summary.requests, acc, dup, oth,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
