-- wrk script: POST a chat completion; BENCH_STREAM=1 asks for a streamed answer.
-- Prints one machine-readable line at the end: "RESULT rps=… p50_us=… p99_us=… errors=…".
local stream = os.getenv("BENCH_STREAM") == "1"
local model = os.getenv("BENCH_MODEL") or "lambda/llama3.1-8b-instruct"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "bench-key")
wrk.body = string.format(
  '{"model":"%s","stream":%s,"messages":[{"role":"user","content":"Say hello to the benchmark"}]}',
  model, stream and "true" or "false")

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT rps=%.1f p50_us=%d p90_us=%d p99_us=%d requests=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(90),
    latency:percentile(99), summary.requests, errors))
end
