// Chat completions end to end: non-stream and stream through curl, fetch and the official
// openai SDK; upstream auth handling; error mapping; timeouts; truncated and garbage
// upstream streams; the per-request log line; secrets never leak; many concurrent streams.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import OpenAI from 'openai';
import {
  startMock, startGateway, mockStats, resetMockStats, waitFor, postChat, sseData, curl,
} from './lib.mjs';

const SECRET = 'upstream-secret-XYZ';
const WRONG_KEY = 'wrong-key-QRS987';
const MODEL = 'lambda/llama3.1-8b-instruct';

const WORDS = 'The quick brown fox jumps over the lazy dog while mock tokens stream steadily to clients'.split(' ');
// The mock's deterministic reply for n tokens.
const mockText = (n) => Array.from({ length: n }, (_, i) => `${WORDS[i % WORDS.length]} `).join('');
// The mock's prompt_tokens for single-message requests: words + 3 per message.
const mockPromptTokens = (messages) =>
  messages.reduce((s, m) => s + 3 + m.content.split(/\s+/).filter(Boolean).length, 0);

let mock;        // requires the upstream key
let openMock;    // no key required; used to see whether any Authorization reaches it
let gw;          // default timeouts, correct key
let gwTimeouts;  // short upstream timeouts
let gwBadKey;    // wrong upstream key
let gwUnreach;   // upstream on a closed port
let gwNoKey;     // api_key null, pointing at openMock
let closedPort;

// Every response body seen by a client, checked for secrets at the end.
const bodies = [];
const record = (s) => { bodies.push(typeof s === 'string' ? s : JSON.stringify(s)); return s; };
const recordErr = (e) => {
  bodies.push(String(e && e.message));
  if (e && e.error) bodies.push(JSON.stringify(e.error));
  return e;
};

const sdk = (g) => new OpenAI({ baseURL: `${g.url}/v1`, apiKey: 'client-key', maxRetries: 0, timeout: 20000 });
const msgs = (text) => [{ role: 'user', content: text }];

async function freePortClosed() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

before(async () => {
  mock = await startMock(['--api-key', SECRET]);
  openMock = await startMock();
  closedPort = await freePortClosed();
  [gw, gwTimeouts, gwBadKey, gwUnreach, gwNoKey] = await Promise.all([
    startGateway({ mock, env: { LAMBDA_API_KEY: SECRET } }),
    startGateway({
      mock,
      env: { LAMBDA_API_KEY: SECRET },
      config: { upstream: { first_byte_timeout_ms: 500, idle_timeout_ms: 400 } },
    }),
    startGateway({ mock, env: { LAMBDA_API_KEY: WRONG_KEY } }),
    startGateway({
      env: { LAMBDA_BASE_URL: `http://127.0.0.1:${closedPort}/v1`, LAMBDA_API_KEY: SECRET },
      config: { upstream: { connect_timeout_ms: 2000 } },
    }),
    startGateway({
      env: { LAMBDA_API_KEY: '' },
      config: { providers: { lambda: { base_url: `${openMock.url}/v1`, api_key: null } } },
    }),
  ]);
});

after(async () => {
  for (const p of [gw, gwTimeouts, gwBadKey, gwUnreach, gwNoKey, mock, openMock]) if (p) await p.stopClean();
});

function assertOpenAIErrorBody(j) {
  assert.equal(typeof j.error, 'object', `error object in ${JSON.stringify(j)}`);
  assert.equal(typeof j.error.message, 'string');
  assert.ok(j.error.message.length > 0);
  assert.equal(typeof j.error.type, 'string');
  assert.ok(j.error.type.length > 0);
  assert.ok('code' in j.error, 'error.code present');
}

// Reads a streamed response through the SDK; returns the chunks.
async function sdkStreamChunks(client, body, opts) {
  const stream = await client.chat.completions.create({ ...body, stream: true }, opts);
  const chunks = [];
  for await (const ch of stream) chunks.push(record(ch));
  return chunks;
}

const contentOf = (chunks) => chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join('');

// ---- 1. non-stream ---------------------------------------------------------------------

test('non-stream chat via curl: 200, chat.completion, deterministic content, usage', async () => {
  const messages = msgs('Say hello [mock:tokens=7]');
  const r = await curl(['-X', 'POST', `${gw.url}/v1/chat/completions`, '-H', 'content-type: application/json',
    '-H', 'authorization: Bearer client-key', '-d', JSON.stringify({ model: MODEL, messages }),
    '-w', '\n%{http_code}']);
  assert.equal(r.code, 0, r.stderr);
  record(r.stdout);
  const nl = r.stdout.lastIndexOf('\n');
  assert.equal(r.stdout.slice(nl + 1), '200');
  const j = JSON.parse(r.stdout.slice(0, nl));
  assert.equal(j.object, 'chat.completion');
  assert.equal(j.choices.length, 1);
  assert.equal(j.choices[0].message.role, 'assistant');
  assert.equal(j.choices[0].message.content, mockText(7));
  assert.equal(j.choices[0].finish_reason, 'stop');
  assert.equal(j.usage.prompt_tokens, mockPromptTokens(messages));
  assert.equal(j.usage.completion_tokens, 7);
  assert.equal(j.usage.total_tokens, j.usage.prompt_tokens + 7);
});

test('non-stream chat via the openai SDK (alias "fast" too)', async () => {
  const client = sdk(gw);
  for (const model of [MODEL, 'fast']) {
    const messages = msgs('Tell me a story [mock:tokens=20]');
    const j = record(await client.chat.completions.create({ model, messages }));
    assert.equal(j.object, 'chat.completion');
    assert.equal(j.choices[0].message.content, mockText(20));
    assert.equal(j.usage.prompt_tokens, mockPromptTokens(messages));
    assert.equal(j.usage.completion_tokens, 20);
    assert.equal(j.usage.total_tokens, mockPromptTokens(messages) + 20);
  }
});

// ---- 2. stream via the SDK -------------------------------------------------------------

test('SDK stream: deltas equal the non-stream content; finish_reason; no usage unless asked', async () => {
  const client = sdk(gw);
  const body = { model: MODEL, messages: msgs('Stream please [mock:tokens=12]') };
  const full = record(await client.chat.completions.create(body));
  const chunks = await sdkStreamChunks(client, body);
  assert.ok(chunks.length >= 13, `chunks: ${chunks.length}`);
  assert.equal(contentOf(chunks), full.choices[0].message.content);
  assert.equal(contentOf(chunks), mockText(12));
  for (const c of chunks) {
    assert.equal(c.object, 'chat.completion.chunk');
    assert.ok(!('usage' in c) || c.usage == null, `unexpected usage in ${JSON.stringify(c)}`);
  }
  const last = chunks[chunks.length - 1];
  assert.equal(last.choices[0].finish_reason, 'stop');
  assert.equal(chunks.filter((c) => c.choices[0]?.finish_reason).length, 1);
});

test('SDK stream with include_usage: exactly one final usage chunk with choices: []', async () => {
  const client = sdk(gw);
  const messages = msgs('Count tokens [mock:tokens=9]');
  const chunks = await sdkStreamChunks(client, { model: MODEL, messages, stream_options: { include_usage: true } });
  const withUsage = chunks.filter((c) => c.usage);
  assert.equal(withUsage.length, 1, JSON.stringify(chunks));
  const last = chunks[chunks.length - 1];
  assert.equal(withUsage[0], last, 'the usage chunk is the last one');
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.prompt_tokens, mockPromptTokens(messages));
  assert.equal(last.usage.completion_tokens, 9);
  assert.equal(last.usage.total_tokens, mockPromptTokens(messages) + 9);
  assert.equal(contentOf(chunks), mockText(9));
  assert.equal(chunks[chunks.length - 2].choices[0].finish_reason, 'stop');
});

test('SDK stream with include_usage and an upstream that omits usage: an estimated usage chunk', async () => {
  const client = sdk(gw);
  const chunks = await sdkStreamChunks(client, {
    model: MODEL, messages: msgs('No usage here [mock:tokens=6,no_usage=1]'), stream_options: { include_usage: true },
  }, { headers: { 'x-request-id': 'chat-no-usage-1' } });
  assert.equal(contentOf(chunks), mockText(6));
  const withUsage = chunks.filter((c) => c.usage);
  assert.equal(withUsage.length, 1, JSON.stringify(chunks));
  const last = chunks[chunks.length - 1];
  assert.equal(withUsage[0], last);
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 6, 'one token per content chunk');
  assert.ok(Number.isInteger(last.usage.prompt_tokens) && last.usage.prompt_tokens > 0);
  assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
  const line = await waitFor(() => gw.logLines().find((l) => l.msg === 'request' && l.request_id === 'chat-no-usage-1'));
  assert.ok(line, 'request log line');
  assert.equal(line.usage_source, 'estimated');
  assert.equal(line.completion_tokens, 6);
});

// ---- 3./4. stream via fetch and curl ---------------------------------------------------

test('raw fetch stream: SSE headers, data: <json> events, ends with data: [DONE]', async () => {
  const r = await postChat(gw, { model: MODEL, messages: msgs('Raw [mock:tokens=5]'), stream: true });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/event-stream/);
  assert.equal(r.headers.get('cache-control'), 'no-cache');
  assert.equal(r.headers.get('x-accel-buffering'), 'no');
  assert.match(r.headers.get('x-request-id') || '', /^[0-9a-f]{32}$/);
  const text = record(await r.text());
  assert.ok(text.endsWith('data: [DONE]\n\n'), `tail: ${JSON.stringify(text.slice(-60))}`);
  const events = text.split('\n\n').filter((e) => e.length);
  assert.ok(events.length >= 7);
  for (const ev of events) assert.match(ev, /^data: /, `event ${JSON.stringify(ev)}`);
  const data = sseData(text);
  assert.equal(data[data.length - 1], '[DONE]');
  assert.equal(data.filter((d) => d === '[DONE]').length, 1);
  const objs = data.slice(0, -1).map((d) => JSON.parse(d));
  for (const o of objs) assert.equal(o.object, 'chat.completion.chunk');
  assert.equal(contentOf(objs), mockText(5));
});

test('curl -N streaming works and ends in [DONE]', async () => {
  const r = await curl(['-N', '-X', 'POST', `${gw.url}/v1/chat/completions`, '-H', 'content-type: application/json',
    '-d', JSON.stringify({ model: 'fast', messages: msgs('curl stream [mock:tokens=4,itl_ms=20]'), stream: true })]);
  assert.equal(r.code, 0, r.stderr);
  record(r.stdout);
  assert.ok(r.stdout.endsWith('data: [DONE]\n\n'), `tail: ${JSON.stringify(r.stdout.slice(-60))}`);
  const data = sseData(r.stdout);
  const objs = data.slice(0, -1).map((d) => JSON.parse(d));
  assert.equal(contentOf(objs), mockText(4));
});

// ---- 5. auth ---------------------------------------------------------------------------

test("the client's Authorization header is never forwarded upstream", async () => {
  await resetMockStats(mock);
  const r = await postChat(gw, { model: MODEL, messages: msgs('auth [mock:tokens=3]') },
    { authorization: 'Bearer client-key' });
  assert.equal(r.status, 200);
  assert.equal(record(await r.json()).choices[0].message.content, mockText(3));
  assert.equal((await mockStats(mock)).auth_failures, 0);

  // A gateway with no upstream key sends no Authorization at all, even when the client does.
  await resetMockStats(openMock);
  const r2 = await postChat(gwNoKey, { model: MODEL, messages: msgs('no key [mock:tokens=2]') },
    { authorization: 'Bearer client-key' });
  assert.equal(r2.status, 200);
  assert.equal(record(await r2.json()).choices[0].message.content, mockText(2));
  const st = await mockStats(openMock);
  assert.equal(st.requests, 1);
  assert.ok(!st.last_authorization_seen, `mock saw an Authorization header: ${JSON.stringify(st)}`);
});

test('a wrong upstream key gives the upstream 401 in OpenAI error shape (SDK AuthenticationError)', async () => {
  await resetMockStats(mock);
  const client = sdk(gwBadKey);
  const err = await client.chat.completions.create({ model: MODEL, messages: msgs('hi') }).then(
    () => null, (e) => recordErr(e));
  assert.ok(err instanceof OpenAI.AuthenticationError, `got ${err && err.constructor.name}: ${err}`);
  assert.equal(err.status, 401);
  const r = await postChat(gwBadKey, { model: MODEL, messages: msgs('hi'), stream: true });
  assert.equal(r.status, 401);
  assert.match(r.headers.get('content-type'), /application\/json/);
  const j = record(await r.json());
  assertOpenAIErrorBody(j);
  assert.equal(j.error.type, 'authentication_error');
  assert.equal((await mockStats(mock)).auth_failures, 2);
});

// ---- 6. upstream error statuses --------------------------------------------------------

test('upstream 429/500/400 are passed on with OpenAI error bodies (non-stream and stream)', async () => {
  const client = sdk(gw);
  const cases = [
    [429, OpenAI.RateLimitError],
    [500, OpenAI.InternalServerError],
    [400, OpenAI.BadRequestError],
  ];
  for (const [status, Cls] of cases) {
    const messages = msgs(`fail [mock:status=${status}]`);
    for (const stream of [false, true]) {
      const r = await postChat(gw, { model: MODEL, messages, stream });
      assert.equal(r.status, status, `stream=${stream}`);
      assert.match(r.headers.get('content-type'), /application\/json/, `stream=${stream}: JSON, not SSE`);
      const j = record(await r.json());
      assertOpenAIErrorBody(j);
      const err = await client.chat.completions.create({ model: MODEL, messages, stream }).then(
        () => null, (e) => recordErr(e));
      assert.ok(err instanceof Cls, `status ${status} stream=${stream}: got ${err && err.constructor.name}`);
      assert.equal(err.status, status);
    }
  }
});

// ---- 7. unreachable, timeouts ----------------------------------------------------------

test('unreachable upstream → 502 upstream_unreachable (non-stream and stream)', async () => {
  for (const stream of [false, true]) {
    const r = await postChat(gwUnreach, { model: MODEL, messages: msgs('hi'), stream });
    assert.equal(r.status, 502);
    const j = record(await r.json());
    assertOpenAIErrorBody(j);
    assert.equal(j.error.code, 'upstream_unreachable');
  }
  const err = await sdk(gwUnreach).chat.completions.create({ model: MODEL, messages: msgs('hi') }).then(
    () => null, (e) => recordErr(e));
  assert.ok(err instanceof OpenAI.APIError);
  assert.equal(err.status, 502);
});

test('an upstream that never answers → 504 after first_byte_timeout_ms', async () => {
  for (const stream of [false, true]) {
    const t0 = Date.now();
    const r = await postChat(gwTimeouts, { model: MODEL, messages: msgs('wait [mock:hang=1]'), stream });
    const dt = Date.now() - t0;
    assert.equal(r.status, 504);
    const j = record(await r.json());
    assertOpenAIErrorBody(j);
    assert.equal(j.error.code, 'upstream_timeout');
    assert.ok(dt >= 400 && dt < 2000, `answered after ${dt} ms`);
  }
  // the gateway let go of the hung upstream requests
  const st = await waitFor(async () => { const s = await mockStats(mock); return s.active === 0 ? s : null; }, 3000);
  assert.ok(st, 'upstream requests still open at the mock');
});

test('an upstream that stalls mid-stream → the stream ends with an error event after idle_timeout_ms', async () => {
  const t0 = Date.now();
  const r = await postChat(gwTimeouts, {
    model: MODEL, messages: msgs('stall [mock:tokens=5,itl_ms=5000]'), stream: true,
  });
  assert.equal(r.status, 200);
  const text = record(await r.text());
  const dt = Date.now() - t0;
  assert.ok(dt >= 300 && dt < 2500, `ended after ${dt} ms`);
  const data = sseData(text);
  assert.ok(!data.includes('[DONE]'), 'no [DONE] after a failure');
  const objs = data.map((d) => JSON.parse(d));
  const last = objs[objs.length - 1];
  assertOpenAIErrorBody(last);
  assert.equal(last.error.code, 'upstream_timeout');
  assert.equal(contentOf(objs.slice(0, -1)), mockText(1), 'the first token arrived before the stall');
  const st = await waitFor(async () => { const s = await mockStats(mock); return s.active === 0 ? s : null; }, 3000);
  assert.ok(st, 'stalled upstream stream still open at the mock');
});

// ---- 8. truncated and garbage upstreams ------------------------------------------------

test('a mid-stream cut: the SDK throws APIError after 2 deltas; raw SSE has an error event and no [DONE]', async () => {
  const body = { model: MODEL, messages: msgs('cut [mock:tokens=10,cut_after=2]') };
  const stream = await sdk(gw).chat.completions.create({ ...body, stream: true });
  const deltas = [];
  let err = null;
  try {
    for await (const ch of stream) {
      record(ch);
      const c = ch.choices?.[0]?.delta?.content;
      if (c) deltas.push(c);
    }
  } catch (e) {
    err = recordErr(e);
  }
  assert.ok(err instanceof OpenAI.APIError, `iteration must throw APIError, got ${err}`);
  assert.deepEqual(deltas, [mockText(1), mockText(2).slice(mockText(1).length)]);

  const r = await postChat(gw, { ...body, stream: true });
  assert.equal(r.status, 200);
  const text = record(await r.text());
  const data = sseData(text);
  assert.ok(!data.includes('[DONE]'), `no [DONE]: ${text}`);
  const last = JSON.parse(data[data.length - 1]);
  assertOpenAIErrorBody(last);
  assert.match(text, /\ndata: \{"error":\{/);
  assert.equal(contentOf(data.slice(0, -1).map((d) => JSON.parse(d))), mockText(2));
});

test('garbage from the upstream → 502, and the gateway keeps serving', async () => {
  for (const stream of [false, true]) {
    const r = await postChat(gw, { model: MODEL, messages: msgs('junk [mock:garbage=1]'), stream });
    assert.equal(r.status, 502, `stream=${stream}`);
    const j = record(await r.json());
    assertOpenAIErrorBody(j);
  }
  const h = await fetch(`${gw.url}/healthz`);
  assert.equal(h.status, 200);
  assert.equal((await h.json()).status, 'ok');
  assert.equal(gw.exited, null, 'gateway still running');
  const r = await postChat(gw, { model: MODEL, messages: msgs('after [mock:tokens=3]') });
  assert.equal(record(await r.json()).choices[0].message.content, mockText(3));
});

// ---- 9. log line -----------------------------------------------------------------------

test('one "request" log line per streamed request, with route, status, timings and usage', async () => {
  const rid = 'chat-log-test-42';
  const chunks = await sdkStreamChunks(sdk(gw), {
    model: 'fast', messages: msgs('log me [mock:tokens=8,ttft_ms=30]'), stream_options: { include_usage: true },
  }, { headers: { 'x-request-id': rid } });
  const usage = chunks[chunks.length - 1].usage;
  assert.equal(usage.completion_tokens, 8);
  const lines = await waitFor(() => {
    const l = gw.logLines().filter((x) => x.msg === 'request' && x.request_id === rid);
    return l.length ? l : null;
  });
  assert.ok(lines, 'log line written');
  await new Promise((r) => setTimeout(r, 100));
  const all = gw.logLines().filter((x) => x.msg === 'request' && x.request_id === rid);
  assert.equal(all.length, 1, JSON.stringify(all));
  const l = all[0];
  assert.equal(l.route, MODEL);
  assert.equal(l.status, 200);
  assert.equal(l.stream, true);
  assert.equal(typeof l.latency_ms, 'number');
  assert.equal(typeof l.ttft_ms, 'number');
  assert.ok(l.ttft_ms >= 25 && l.ttft_ms <= l.latency_ms, `ttft ${l.ttft_ms} latency ${l.latency_ms}`);
  assert.equal(l.prompt_tokens, usage.prompt_tokens);
  assert.equal(l.completion_tokens, usage.completion_tokens);
  assert.equal(l.usage_source, 'upstream');
  assert.equal(l.outcome, 'ok');
  assert.equal(l.partial, false);
});

// ---- 11. concurrency -------------------------------------------------------------------

test('500 concurrent SDK streams all complete with the right content', async () => {
  const client = sdk(gw);
  const N = 500;
  const results = await Promise.all(Array.from({ length: N }, async (_, i) => {
    const n = 1 + (i % 23);
    const chunks = await sdkStreamChunks(client, { model: MODEL, messages: msgs(`req ${i} [mock:tokens=${n}]`) });
    return { n, content: contentOf(chunks), finish: chunks[chunks.length - 1].choices[0]?.finish_reason };
  }));
  let bad = 0;
  for (const r of results) if (r.content !== mockText(r.n) || r.finish !== 'stop') bad++;
  assert.equal(bad, 0, `${bad} of ${N} streams wrong`);
  const h = await fetch(`${gw.url}/healthz`);
  assert.equal(h.status, 200);
});

// ---- 10. secrets (runs last) -----------------------------------------------------------

test('no upstream key appears in any log or response body', async () => {
  assert.ok(bodies.length > 50, `bodies recorded: ${bodies.length}`);
  for (const key of [SECRET, WRONG_KEY]) {
    for (const [name, p] of [['gw', gw], ['gwTimeouts', gwTimeouts], ['gwBadKey', gwBadKey],
      ['gwUnreach', gwUnreach], ['gwNoKey', gwNoKey]]) {
      assert.ok(p.err.length > 0, `${name} logged something`);
      assert.ok(!p.err.includes(key), `${name} stderr contains ${key}`);
      assert.ok(!p.out.includes(key), `${name} stdout contains ${key}`);
    }
    const leaked = bodies.filter((b) => b.includes(key));
    assert.equal(leaked.length, 0, `bodies contain ${key}: ${leaked.slice(0, 2)}`);
  }
});
