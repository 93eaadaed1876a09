-- wrk script for the ingest benchmark: one alert per request, for Klaxon
-- (PUT /trigger, form body) or Alertmanager (POST /api/v2/alerts, a JSON
-- array holding one alert), with a new key per request or one of 100 keys.
--
-- Arguments after `--`: target (klaxon | alertmanager), scenario
-- (new | dedup), and for Klaxon the integration key.

local threads = {}

-- Runs in the main state once per thread: a per-thread id keeps the
-- generated keys unique across threads (each thread has its own state and
-- its own counter).
function setup(thread)
   thread:set("thread_id", #threads)
   table.insert(threads, thread)
end

function init(args)
   target, scenario = args[1], args[2]
   counter = 0
   if target == "klaxon" then
      wrk.method = "PUT"
      wrk.headers["Authorization"] = 'Token token="' .. args[3] .. '"'
      wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
   else
      wrk.method = "POST"
      wrk.headers["Content-Type"] = "application/json"
   end
end

function request()
   counter = counter + 1
   local key
   if scenario == "dedup" then
      -- The benchmark sends these 100 keys once before the run, so every
      -- request here hits an alert that is already open.
      key = "k" .. (counter % 100)
   else
      key = "t" .. thread_id .. "-" .. counter
   end
   local body
   if target == "klaxon" then
      body = "message=load+test&key=" .. key
   else
      body = '[{"labels":{"alertname":"LoadTest","instance":"' .. key
         .. '"},"annotations":{"summary":"load test"}}]'
   end
   return wrk.format(nil, nil, nil, body)
end

-- One machine-readable line for the benchmark to parse. Latencies are in
-- microseconds; wrk counts answers with a status of 400 or more in
-- errors.status.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "ingest-result requests=%d duration_us=%d p50_us=%d p99_us=%d p999_us=%d"
         .. " status_errors=%d socket_errors=%d\n",
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
      e.status, e.connect + e.read + e.write + e.timeout))
end
