// GET /metrics end to end: a gateway in front of the mock serves chat requests (non-stream,
// stream, estimated usage, an unknown model, a name passed through unlisted, a client that
// leaves mid-stream, a stream held open), then the exposition is read: the families, their
// HELP and TYPE lines, the values the requests must have produced, histograms that add up,
// no label a client chose, sophia_streams_active back to 0, and promtool accepting all of it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startMock, startGateway, postChat, waitFor, sleep, promtool } from './lib.mjs';

const MODEL = 'lambda/llama3.1-8b-instruct';
const msgs = (text) => [{ role: 'user', content: text }];

let mock;
let gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway({ mock });
});

after(async () => {
  await gw?.stopClean();
  await mock?.stop();
});

async function scrape() {
  const r = await fetch(`${gw.url}/metrics`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  return r.text();
}

// Parses the exposition: { types: {family: type}, help: {family: text}, samples: [{name,
// labels: {…}, value, line}] }. Label values are unescaped.
function parse(text) {
  const types = {};
  const help = {};
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    let m = line.match(/^# (HELP|TYPE) (\S+) (.*)$/);
    if (m) {
      (m[1] === 'HELP' ? help : types)[m[2]] = m[3];
      continue;
    }
    m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/);
    assert.ok(m, `sample line: ${line}`);
    const labels = {};
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/gy;
    const body = m[2] ?? '';
    let lm;
    let consumed = 0;
    while ((lm = re.exec(body))) {
      labels[lm[1]] = lm[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
      consumed = re.lastIndex;
    }
    assert.equal(consumed, body.length, `labels of ${line}`);
    samples.push({ name: m[1], labels, value: Number(m[3]), line });
  }
  return { types, help, samples };
}

// The value of the one sample with this name and exactly these labels (undefined if none).
function value(p, name, labels = {}) {
  const want = JSON.stringify(Object.entries(labels).sort());
  const hits = p.samples.filter((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want);
  assert.ok(hits.length <= 1, `one ${name} ${want}`);
  return hits[0]?.value;
}

const sum = (p, name, pred = () => true) =>
  p.samples.filter((s) => s.name === name && pred(s.labels)).reduce((a, s) => a + s.value, 0);

test('/metrics: request families, GenAI histograms, streams, labels and promtool', async () => {
  const ok = [
    { model: MODEL, messages: msgs('hi [mock:tokens=5]') },
    { model: MODEL, messages: msgs('hello there [mock:tokens=7]') },
    { model: MODEL, stream: true, stream_options: { include_usage: true }, messages: msgs('hi [mock:tokens=4]') },
    { model: MODEL, stream: true, messages: msgs('hi [mock:tokens=3,no_usage=1]') },
  ];
  for (const b of ok) {
    const r = await postChat(gw, b);
    assert.equal(r.status, 200);
    await r.text();
  }
  // Never routed: the model the client asked for is no label.
  const nf = await postChat(gw, { model: 'no-such-model "quoted"\nline', messages: msgs('hi') });
  assert.equal(nf.status, 404);
  await nf.text();
  // Passed through to the discovering provider under a name of the client's own.
  const pt = await postChat(gw, { model: 'lambda/client-made-up-name-42', messages: msgs('hi') });
  assert.equal(pt.status, 200);
  await pt.text();
  // Not JSON: 400, no route.
  const bad = await postChat(gw, '{"model":');
  assert.equal(bad.status, 400);
  await bad.text();

  // A stream held open is counted while it runs.
  const held = await postChat(gw, { model: MODEL, stream: true, messages: msgs('hi [mock:tokens=4,itl_ms=250]') });
  assert.equal(held.status, 200);
  assert.equal(value(parse(await scrape()), 'sophia_streams_active'), 1);
  await held.text();

  // A client that leaves mid-stream: 499, and the stream is no longer counted.
  const ac = new AbortController();
  const gone = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: MODEL, stream: true, messages: msgs('hi [mock:tokens=40,itl_ms=100]') }),
    signal: ac.signal,
  });
  await gone.body.getReader().read();
  ac.abort();
  const labels499 = { provider: 'lambda', model: MODEL, status: '499' };
  assert.ok(await waitFor(async () => value(parse(await scrape()), 'sophia_requests_total', labels499) === 1, 10000), '499 counted');

  const text = await scrape();
  fs.writeFileSync(`${gw.dir}/metrics.txt`, text);
  const p = parse(text);

  // Every family has HELP and TYPE, and every sample belongs to a declared family.
  const families = {
    sophia_http_requests_total: 'counter', sophia_chats_active: 'gauge', sophia_streams_active: 'gauge',
    sophia_connections: 'gauge', sophia_upstream_active: 'gauge', sophia_upstream_retries_total: 'counter',
    sophia_upstream_fallbacks_total: 'counter', sophia_config_generation: 'gauge',
    sophia_config_reloads_total: 'counter', sophia_endpoint_breaker_state: 'gauge',
    sophia_provider_token_expiry_days: 'gauge', sophia_requests_total: 'counter',
    gen_ai_client_token_usage: 'histogram', gen_ai_client_operation_duration_seconds: 'histogram',
    gen_ai_server_time_to_first_token_seconds: 'histogram', sophia_cost_usd_total: 'counter',
    sophia_tokens_estimated_total: 'counter', sophia_gateway_overhead_seconds: 'histogram',
    sophia_requests_denied_total: 'counter', sophia_metrics_series_dropped_total: 'counter',
    sophia_throttled_total: 'counter', sophia_budget_denied_total: 'counter',
    sophia_budget_soft_warnings_total: 'counter', sophia_budget_remaining_usd: 'gauge',
    sophia_budget_spent_usd: 'gauge', sophia_upstream_multi_handles: 'gauge', sophia_worker: 'gauge',
    sophia_workers: 'gauge',
  };
  for (const [f, type] of Object.entries(families)) {
    assert.equal(p.types[f], type, `TYPE of ${f}`);
    assert.ok(p.help[f]?.length > 10, `HELP of ${f}`);
  }
  for (const s of p.samples) {
    const fam = s.name.replace(/_(bucket|sum|count)$/, '');
    assert.ok(p.types[s.name] || p.types[fam] === 'histogram', `family of ${s.line}`);
  }

  // Requests by provider, model and status.
  const R = 'sophia_requests_total';
  assert.equal(value(p, R, { provider: 'lambda', model: MODEL, status: '200' }), 5);
  assert.equal(value(p, R, labels499), 1);
  assert.equal(value(p, R, { provider: 'none', model: 'none', status: '404' }), 1);
  assert.equal(value(p, R, { provider: 'none', model: 'none', status: '400' }), 1);
  assert.equal(value(p, R, { provider: 'lambda', model: 'none', status: '200' }), 1);
  assert.equal(sum(p, R), 9);
  assert.doesNotMatch(text, /client-made-up|no-such-model|quoted/);

  // Token usage: the upstream's counts (the mock: words + 3 per message, tokens=N).
  const L = { gen_ai_system: 'lambda', gen_ai_request_model: MODEL };
  const T = 'gen_ai_client_token_usage';
  assert.equal(value(p, `${T}_count`, { ...L, gen_ai_token_type: 'input' }), 6);
  assert.equal(value(p, `${T}_count`, { ...L, gen_ai_token_type: 'output' }), 6);
  assert.ok(value(p, `${T}_sum`, { ...L, gen_ai_token_type: 'output' }) >= 5 + 7 + 4 + 3 + 4 + 1);
  assert.equal(value(p, `${T}_bucket`, { ...L, gen_ai_token_type: 'output', le: '1' }) >= 0, true);
  assert.equal(value(p, `${T}_bucket`, { ...L, gen_ai_token_type: 'output', le: '4' }) >= 2, true); // 4, 3 (+ the 499's)
  assert.equal(value(p, 'sophia_tokens_estimated_total') >= 1, true); // no_usage=1 (and maybe the 499)

  // Durations for every request, time to first token for those that sent one.
  const D = 'gen_ai_client_operation_duration_seconds';
  assert.equal(value(p, `${D}_count`, L), 6);
  assert.equal(value(p, `${D}_count`, { gen_ai_system: 'none', gen_ai_request_model: 'none' }), 2);
  assert.equal(sum(p, `${D}_count`), 9);
  assert.ok(value(p, `${D}_sum`, L) > 0.5, 'the held stream took about a second');
  assert.equal(value(p, 'gen_ai_server_time_to_first_token_seconds_count', L), 6);
  assert.equal(value(p, 'gen_ai_server_time_to_first_token_seconds_count', { gen_ai_system: 'none', gen_ai_request_model: 'none' }), undefined);

  // Gateway overhead: every request; its time without the upstream's is far below the total.
  assert.equal(value(p, 'sophia_gateway_overhead_seconds_count'), 9);
  assert.ok(value(p, 'sophia_gateway_overhead_seconds_sum') < sum(p, `${D}_sum`) / 4);

  // Every histogram series: buckets cumulative, +Inf equal to _count.
  for (const fam of Object.keys(families).filter((f) => families[f] === 'histogram')) {
    const series = new Map();
    for (const s of p.samples.filter((x) => x.name === `${fam}_bucket`)) {
      const { le, ...rest } = s.labels;
      const k = JSON.stringify(Object.entries(rest).sort());
      if (!series.has(k)) series.set(k, { labels: rest, buckets: [] });
      series.get(k).buckets.push([le, s.value]);
    }
    for (const { labels, buckets } of series.values()) {
      for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i][1] >= buckets[i - 1][1], `${fam} cumulative`);
      assert.equal(buckets.at(-1)[0], '+Inf');
      assert.equal(buckets.at(-1)[1], value(p, `${fam}_count`, labels), `${fam} +Inf = count`);
      assert.ok(value(p, `${fam}_sum`, labels) >= 0);
    }
  }

  // Costs, by provider, model and key (the built-in Lambda price list prices this model).
  assert.ok(value(p, 'sophia_cost_usd_total', { provider: 'lambda', model: MODEL, key: 'none' }) > 0);
  assert.equal(p.samples.filter((s) => s.name === 'sophia_cost_usd_total' && s.labels.provider === 'none').length, 0);

  // Gauges back at rest; counters that did not move.
  assert.equal(value(p, 'sophia_streams_active'), 0);
  assert.equal(value(p, 'sophia_chats_active'), 0);
  assert.equal(value(p, 'sophia_requests_denied_total', { reason: 'throttled' }), 0);
  assert.equal(value(p, 'sophia_metrics_series_dropped_total', { family: 'sophia_requests_total' }), 0);
  assert.equal(value(p, 'sophia_endpoint_breaker_state', { provider: 'lambda', endpoint: '0' }), 0);
  assert.ok(value(p, 'sophia_http_requests_total') >= 12);

  // The whole text passes promtool (exit 0: no error, no lint warning).
  const pt2 = await promtool(text);
  assert.equal(pt2.code, 0, pt2.out);
  assert.equal(pt2.out.trim(), '');
});

test('/metrics: Responses and Messages streams are counted while they run, once', async () => {
  const post = (path, body) => fetch(`${gw.url}${path}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  const before = parse(await scrape());
  const n0 = sum(before, 'sophia_requests_total');
  const slow = 'hi [mock:tokens=3,itl_ms=250]';
  const a = await post('/v1/responses', { model: MODEL, input: slow, stream: true, store: false });
  const b = await post('/v1/messages', { model: MODEL, max_tokens: 64, stream: true, messages: msgs(slow) });
  assert.equal(a.status, 200);
  assert.equal(b.status, 200);
  assert.equal(value(parse(await scrape()), 'sophia_streams_active'), 2);
  assert.match(await a.text(), /response\.completed/);
  assert.match(await b.text(), /message_stop/);
  const e = await post('/v1/embeddings', { model: 'lambda/bge-m3', input: 'hi' });
  await e.text();
  const p = parse(await scrape());
  assert.equal(value(p, 'sophia_streams_active'), 0);
  assert.equal(sum(p, 'sophia_requests_total'), n0 + 3);
  assert.equal(value(p, 'sophia_requests_total', { provider: 'lambda', model: MODEL, status: '200' }),
    value(before, 'sophia_requests_total', { provider: 'lambda', model: MODEL, status: '200' }) + 2);
  // Embeddings: not streamed; lambda/bge-m3 is neither configured nor listed by the mock here,
  // so it was passed through unlisted and carries no model label.
  assert.equal(e.status, 200);
  assert.equal(value(p, 'sophia_requests_total', { provider: 'lambda', model: 'none', status: '200' }),
    value(before, 'sophia_requests_total', { provider: 'lambda', model: 'none', status: '200' }) + 1);
  assert.doesNotMatch(await scrape(), /bge-m3/);
});

test('/metrics needs no key and answers HEAD', async () => {
  const r = await fetch(`${gw.url}/metrics`, { headers: { authorization: 'Bearer whatever' } });
  assert.equal(r.status, 200);
  await r.text();
  const h = await fetch(`${gw.url}/metrics`, { method: 'HEAD' });
  assert.equal(h.status, 200);
  await sleep(10);
});
