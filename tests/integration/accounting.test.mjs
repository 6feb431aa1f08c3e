// Accounting end to end: the price of every request (X-Sophia-Cost-USD, the stream's final
// usage), token buckets (429 + Retry-After, x-ratelimit-* headers, queue mode), budgets that
// cannot overshoot (1,000 concurrent requests against a budget of exactly 10), the mid-stream
// budget cut (hard) and soft mode, models a key may not use, and budgets that survive a restart
// (rebuilt from the ledger).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import OpenAI from 'openai';
import { startMock, startGateway, sseData, sleep, promtool, waitFor } from './lib.mjs';

const noEnv = { LAMBDA_BASE_URL: '', LAMBDA_API_KEY: '', SNOWFLAKE_ACCOUNT: '' };
const hash = (k) => `sha256:${crypto.createHash('sha256').update(k).digest('hex')}`;
const procs = [];
after(async () => { for (const p of procs) await p.stop(); });

let mock;
async function theMock() {
  if (!mock) { mock = await startMock(['--ttft-ms', '0', '--itl-ms', '0']); procs.push(mock); }
  return mock;
}

// A gateway whose lambda provider serves "m" at $1 in / $2 out per 1M tokens, or as given.
async function gateway(extra = {}, price = { price_in: 1, price_out: 2 }, opts = {}) {
  const m = await theMock();
  const gw = await startGateway({
    env: noEnv,
    cwd: opts.cwd,
    config: {
      providers: { lambda: { base_url: `${m.url}/v1`, api_key: null, models: [{ id: 'm', ...price }] } },
      ...extra,
    },
  });
  procs.push(gw);
  return gw;
}

function chat(gw, key, body, headers = {}) {
  return fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, ...headers },
    body: JSON.stringify({ model: 'lambda/m', messages: [{ role: 'user', content: 'hello' }], ...body }),
  });
}

const near = (a, b, what) => assert.ok(Math.abs(a - b) < 1e-9, `${what}: ${a} vs ${b}`);

test('the cost of every request: X-Sophia-Cost-USD, usage.cost_usd at the end of a stream, estimated usage', async () => {
  const gw = await gateway({ keys: [{ name: 'alice', hash: hash('sk-alice') }] });
  const r = await chat(gw, 'sk-alice', { messages: [{ role: 'user', content: '[mock:tokens=20] hi' }] });
  assert.equal(r.status, 200);
  const j = await r.json();
  const want = (j.usage.prompt_tokens * 1 + j.usage.completion_tokens * 2) / 1e6;
  assert.equal(j.usage.completion_tokens, 20);
  near(Number(r.headers.get('x-sophia-cost-usd')), want, 'header');

  const s = await chat(gw, 'sk-alice', {
    stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: '[mock:tokens=30] hi' }],
  });
  const events = sseData(await s.text());
  assert.equal(events.at(-1), '[DONE]');
  const last = JSON.parse(events.at(-2));
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 30);
  near(last.usage.cost_usd, (last.usage.prompt_tokens + 30 * 2) / 1e6, 'stream usage');

  // No usage from the upstream: counted by the gateway, and said so in the log.
  const e = await chat(gw, 'sk-alice', {
    stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: '[mock:tokens=12,no_usage=1] hi' }],
  });
  const ev = sseData(await e.text());
  const u = JSON.parse(ev.at(-2)).usage;
  assert.equal(u.completion_tokens, 12); // one token per content chunk
  near(u.cost_usd, (u.prompt_tokens + 24) / 1e6, 'estimated');
  const line = await waitFor(() => gw.logLines().filter((l) => l.msg === 'request' && l.completion_tokens === 12).at(-1));
  assert.equal(line.usage_source, 'estimated');
});

test('token buckets: 429 rate_limit_exceeded with Retry-After, x-ratelimit-* on every answer, a request too large, queue mode', async () => {
  const gw = await gateway({ keys: [{ name: 'k', hash: hash('sk-k'), limits: { rpm: 2, tpm: 1000 } }] });
  const a = await chat(gw, 'sk-k', { max_tokens: 10 });
  assert.equal(a.status, 200);
  assert.equal(a.headers.get('x-ratelimit-limit-requests'), '2');
  assert.equal(a.headers.get('x-ratelimit-remaining-requests'), '1');
  assert.equal(a.headers.get('x-ratelimit-limit-tokens'), '1000');
  assert.match(a.headers.get('x-ratelimit-reset-requests'), /^\d+(\.\d+)?s$/);
  await a.text();
  assert.equal((await chat(gw, 'sk-k', { max_tokens: 10 })).status, 200);
  const c = await chat(gw, 'sk-k', { max_tokens: 10 });
  assert.equal(c.status, 429);
  const ra = Number(c.headers.get('retry-after'));
  assert.ok(ra >= 20 && ra <= 30, `Retry-After ${ra}`);
  assert.equal(c.headers.get('x-ratelimit-remaining-requests'), '0');
  const err = (await c.json()).error;
  assert.equal(err.code, 'rate_limit_exceeded');
  assert.match(err.message, /key 'k'.*2 requests per minute/);

  // The official SDK raises RateLimitError (and would honour Retry-After when retrying).
  const sdk = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'sk-k', maxRetries: 0 });
  await assert.rejects(sdk.chat.completions.create({ model: 'lambda/m', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.RateLimitError && e.status === 429);

  // More tokens than a minute's limit can ever give: refused, with no Retry-After.
  const gw2 = await gateway({ keys: [{ name: 'k', hash: hash('sk-k'), limits: { tpm: 100 } }] });
  const big = await chat(gw2, 'sk-k', { max_tokens: 500 });
  assert.equal(big.status, 429);
  assert.equal(big.headers.get('retry-after'), null);
  assert.match((await big.json()).error.message, /too large/);

  // Queue mode: the second request waits for its token (1 per second at 60 rpm) instead of
  // being refused.
  const gw3 = await gateway({
    keys: [{ name: 'q', hash: hash('sk-q'), limits: { rpm: 60 } }],
    throttle: { queue_ms: 3000 },
  });
  await (await chat(gw3, 'sk-q', {})).text();
  for (let i = 0; i < 59; i++) await (await chat(gw3, 'sk-q', {})).text();
  const t0 = Date.now();
  const q = await chat(gw3, 'sk-q', {});
  assert.equal(q.status, 200);
  assert.ok(Date.now() - t0 >= 500, `waited ${Date.now() - t0} ms`);
});

test('concurrency limit per key and per route (model_limits)', async () => {
  const gw = await gateway({
    keys: [{ name: 'c', hash: hash('sk-c'), limits: { concurrent: 1 } }, { name: 'd', hash: hash('sk-d') }],
    model_limits: [{ match: 'lambda', limits: { concurrent: 2 } }],
  });
  const slow = { messages: [{ role: 'user', content: '[mock:ttft_ms=400] x' }] };
  const [r1, r2] = await Promise.all([chat(gw, 'sk-c', slow), sleep(100).then(() => chat(gw, 'sk-c', slow))]);
  assert.deepEqual([r1.status, r2.status].sort(), [200, 429]);
  const e = await (r1.status === 429 ? r1 : r2).json();
  assert.match(e.error.message, /concurrent/);
  // The provider's limit counts every key.
  const rs = await Promise.all([chat(gw, 'sk-d', slow), chat(gw, 'sk-c', slow), sleep(100).then(() => chat(gw, 'sk-d', slow))]);
  const st = rs.map((r) => r.status).sort();
  assert.deepEqual(st, [200, 200, 429]);
  assert.match((await rs.find((r) => r.status === 429).json()).error.message, /route 'lambda'/);
});

test('a budget of exactly 10 worst-case requests admits exactly 10 of 1,000 concurrent ones; what they free admits more', async () => {
  // $1 per 1M output tokens, nothing for input: the worst case of max_tokens 1000 is $0.001.
  const gw = await gateway({ keys: [{ name: 'b', hash: hash('sk-b'), budget: { daily_usd: 0.01 } }] },
    { price_in: 0, price_out: 1 });
  const body = { max_tokens: 1000, messages: [{ role: 'user', content: '[mock:tokens=5,ttft_ms=1500] x' }] };
  const rs = await Promise.all(Array.from({ length: 1000 }, () => chat(gw, 'sk-b', body)));
  const ok = rs.filter((r) => r.status === 200);
  const denied = rs.filter((r) => r.status === 429);
  assert.equal(ok.length, 10);
  assert.equal(denied.length, 990);
  const e = (await denied[0].json()).error;
  assert.equal(e.code, 'budget_exceeded');
  assert.match(e.message, /daily budget of key 'b' \(\$0\.01\).*resets at \d{4}-\d\d-\d\dT00:00:00Z/);
  assert.ok(Number(denied[0].headers.get('retry-after')) > 0);
  await Promise.all(ok.map((r) => r.json()));
  for (const r of denied.slice(1)) await r.arrayBuffer();
  // Each cost 5 tokens × $1/1M: $0.00005 spent, $0.00995 left = 9 more worst cases.
  const more = await Promise.all(Array.from({ length: 100 }, () => chat(gw, 'sk-b', body)));
  assert.equal(more.filter((r) => r.status === 200).length, 9);
  await Promise.all(more.map((r) => r.arrayBuffer()));

  // The metrics say so (and pass promtool): 990 + 91 refusals, what is left of the budget.
  const text = await (await fetch(`${gw.url}/metrics`)).text();
  assert.match(text, /^sophia_budget_denied_total\{scope="key",name="b"\} 1081$/m);
  assert.match(text, /^sophia_requests_denied_total\{reason="budget"\} 1081$/m);
  const left = Number(text.match(/^sophia_budget_remaining_usd\{scope="key",name="b",period="daily"\} (\S+)$/m)[1]);
  near(left, 0.01 - 19 * 5 / 1e6, 'budget remaining');
  const pt = await promtool(text);
  assert.equal(pt.code, 0, pt.out);
});

test('a stream whose running cost passes the budget ends with a budget_exceeded event (hard); soft mode lets it finish and warns', async () => {
  // $1 per 1M output tokens; the budget covers 100 tokens; max_tokens unset: 16 assumed.
  const budget = (mode) => ({
    keys: [{ name: 's', hash: hash('sk-s'), budget: { daily_usd: 0.0001, mode, soft_pct: 50 } }],
    throttle: { default_max_tokens: 16 },
  });
  const body = { stream: true, messages: [{ role: 'user', content: '[mock:tokens=400] x' }] };
  const gw = await gateway(budget('hard'), { price_in: 0, price_out: 1 });
  const r = await chat(gw, 'sk-s', body);
  assert.equal(r.status, 200);
  const ev = sseData(await r.text());
  const err = JSON.parse(ev.at(-1)).error;
  assert.equal(err.code, 'budget_exceeded');
  assert.match(err.message, /stream ended/);
  const content = ev.slice(0, -1).map((d) => JSON.parse(d)).filter((c) => c.choices?.[0]?.delta?.content);
  assert.ok(content.length >= 90 && content.length <= 100, `${content.length} tokens relayed`);
  // Nothing is left: the next request is refused at once.
  assert.equal((await chat(gw, 'sk-s', body)).status, 429);

  const soft = await gateway(budget('soft'), { price_in: 0, price_out: 1 });
  const s = await chat(soft, 'sk-s', body);
  const sev = sseData(await s.text());
  assert.equal(sev.at(-1), '[DONE]');
  await waitFor(() => soft.logLines().some((l) => /exceeded \(soft mode/.test(l.msg)));
  const warns = soft.logLines().filter((l) => /budget/.test(l.msg));
  // One request crossed both the 50 % threshold and the budget: one warning, the higher one.
  assert.ok(warns.some((l) => /exceeded \(soft mode/.test(l.msg) && l.scope === 'key' && l.name === 's'), JSON.stringify(warns));
  assert.equal((await chat(soft, 'sk-s', body)).status, 200);
});

test('a key limited to some models gets 403 for others', async () => {
  const gw = await gateway({ keys: [{ name: 'x', hash: hash('sk-x'), models: ['lambda/other-*'] }] });
  const r = await chat(gw, 'sk-x', {});
  assert.equal(r.status, 403);
  const e = (await r.json()).error;
  assert.equal(e.code, 'model_not_allowed');
  assert.match(e.message, /'x' may not use the model 'lambda\/m'/);
});

test('a restart keeps the budget: spend is rebuilt from the ledger', async () => {
  const cfg = { keys: [{ name: 'r', hash: hash('sk-r'), budget: { daily_usd: 0.0003 } }] };
  const price = { price_in: 0, price_out: 1 };
  const gw = await gateway(cfg, price);
  const body = { max_tokens: 100, messages: [{ role: 'user', content: '[mock:tokens=100] x' }] };
  for (let i = 0; i < 2; i++) assert.equal((await chat(gw, 'sk-r', body)).status, 200);
  await gw.stop();
  // Same directory (same sophia.db): $0.0002 spent, $0.0001 left: one more, then refused.
  const gw2 = await gateway(cfg, price, { cwd: gw.dir });
  assert.equal((await chat(gw2, 'sk-r', body)).status, 200);
  const r = await chat(gw2, 'sk-r', body);
  assert.equal(r.status, 429);
  assert.equal((await r.json()).error.code, 'budget_exceeded');
});
