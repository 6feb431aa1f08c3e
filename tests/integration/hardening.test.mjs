// Regression tests for what hostile input and fault injection found: callbacks that outlive
// their request, out-of-range numbers from an upstream, provider secrets echoed by an
// upstream, lenient JSON, slow bodies, streams cut by shutdown, and a newcomer's mistakes.
// Each test failed before its fix.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  startMock, startGateway, startScripted, makePat, waitFor, sleep, postChat,
} from './lib.mjs';

const cleanup = [];
after(async () => {
  for (const p of cleanup.reverse()) {
    if (p.stopClean) await p.stopClean();
    else if (p.close) await p.close();
  }
});

const noLambda = { LAMBDA_BASE_URL: '', LAMBDA_API_KEY: '' };

// ---- 1. no callback frees the request under its own feet ---------------------------------

test('retry timer → token expired → error write fails on a reset socket: no use-after-free', async () => {
  // Cortex answers 429 with Retry-After: 3; the PAT expires during the backoff, so the retry
  // cannot start and the gateway answers an error on a socket the client has reset while the
  // gateway was not reading it (64 KiB of pipelined bytes pending).
  const up = await startScripted((req, res) => {
    res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '3' });
    res.end(JSON.stringify({ message: 'Too many requests', code: '390429' }));
  });
  cleanup.push(up);
  const gw = await startGateway({
    env: noLambda,
    config: {
      upstream: { max_retries: 2, retry_base_ms: 10 },
      providers: { cortex: { account: 'acct', user: 'u', pat: makePat(2), base_url: up.url } },
    },
  });
  const body = JSON.stringify({ model: 'cortex/llama3.1-70b', messages: [{ role: 'user', content: 'hi' }] });
  const s = net.connect(gw.port, '127.0.0.1');
  await new Promise((r) => s.on('connect', r));
  s.on('error', () => {});
  const pipelined = `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
    `Content-Length: 200000\r\n\r\n${'x'.repeat(100000)}`;
  s.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${body.length}\r\n\r\n${body}${pipelined}`);
  assert.ok(await waitFor(() => up.requests.length >= 1, 3000), 'first attempt reached Cortex');
  await sleep(300);
  s.resetAndDestroy();
  // The retry fires at +3 s and fails to start (token expired).
  assert.ok(await waitFor(() => gw.logLines().some((l) => l.msg === 'request'), 8000), 'request ended');
  const r = await fetch(`${gw.url}/healthz`);
  assert.equal(r.status, 200, 'the gateway still serves');
  assert.equal(up.requests.length, 1, 'no second attempt with an expired token');
  await gw.stopClean();
});

// ---- 2. numbers from an upstream are checked ---------------------------------------------

// An OpenAI-compatible upstream whose usage (or created) is out of range, stream and not.
function badNumbersUpstream(prompt, completion = 5) {
  return startScripted((req, res, body) => {
    const j = JSON.parse(body);
    const usage = `{"prompt_tokens":${prompt},"completion_tokens":${completion},"total_tokens":7}`;
    if (j.stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello there"},"finish_reason":null}]}\n\n');
      res.write('data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n');
      res.write(`data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":${usage}}\n\n`);
      res.end('data: [DONE]\n\n');
    } else {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],"usage":${usage}}`);
    }
  });
}

for (const bad of ['1e43', '-9.2e18', '-1', '2.5']) {
  test(`upstream usage prompt_tokens ${bad}: ignored with a warning, tokens estimated (stream and not)`, async () => {
    const up = await badNumbersUpstream(bad);
    cleanup.push(up);
    const gw = await startGateway({ env: { LAMBDA_BASE_URL: `${up.url}/v1`, LAMBDA_API_KEY: 'k' } });
    const model = 'lambda/llama3.1-8b-instruct';
    const r = await postChat(gw, { model, messages: [{ role: 'user', content: 'hi' }] }, { 'x-request-id': 'bad-ns' });
    assert.equal(r.status, 200);
    const j = await r.json();
    assert.ok(j.usage.prompt_tokens >= 0 && j.usage.prompt_tokens < 1000, `usage to the client: ${JSON.stringify(j.usage)}`);
    const rs = await postChat(gw, { model, stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'hi' }] },
      { 'x-request-id': 'bad-s' });
    const text = await rs.text();
    const usageChunks = text.split('\n\n').filter((e) => e.includes('"usage"'));
    assert.equal(usageChunks.length, 1, text);
    const u = JSON.parse(usageChunks[0].slice(6)).usage;
    assert.ok(u.prompt_tokens >= 0 && u.prompt_tokens < 1000, `stream usage: ${JSON.stringify(u)}`);
    for (const rid of ['bad-ns', 'bad-s']) {
      const l = await waitFor(() => gw.logLines().find((x) => x.msg === 'request' && x.request_id === rid));
      assert.equal(l.usage_source, 'estimated', JSON.stringify(l));
      assert.ok(l.prompt_tokens >= 0 && l.prompt_tokens < 1000, JSON.stringify(l));
      assert.ok(gw.logLines().some((x) => x.level === 'warn' && x.request_id === rid && /usage/.test(x.msg)),
        'a warning names the request');
    }
    await gw.stopClean();
  });
}

test('Cortex: out-of-range created and numeric error code are not undefined behaviour', async () => {
  const up = await startScripted((req, res, body) => {
    const j = JSON.parse(body);
    if (j.messages[0].content === 'code') {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end('{"message":"bad thing","code":1e300}');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"id":"x","created":1e300,"choices":[{"message":{"content":"ok"}}],"usage":{"prompt_tokens":-9.2e18,"completion_tokens":3}}');
  });
  cleanup.push(up);
  const gw = await startGateway({
    env: noLambda,
    config: { providers: { cortex: { account: 'acct', user: 'u', pat: makePat(86400), base_url: up.url } } },
  });
  let r = await postChat(gw, { model: 'cortex/llama3.1-70b', stream: false, messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(r.status, 200);
  const j = await r.json();
  assert.ok(j.created > 1600000000 && j.created < 4102444800, `created ${j.created}`);
  assert.ok(j.usage === undefined || (j.usage.prompt_tokens >= 0 && j.usage.prompt_tokens < 1000), JSON.stringify(j.usage));
  r = await postChat(gw, { model: 'cortex/llama3.1-70b', stream: false, messages: [{ role: 'user', content: 'code' }] });
  assert.equal(r.status, 400);
  await r.json();
  await gw.stopClean();
});

// ---- 4. request bodies are strict JSON ---------------------------------------------------

test('request JSON: trailing bytes, control characters, \\u0000, invalid UTF-8, duplicate keys → 400', async () => {
  const mock = await startMock();
  cleanup.push(mock);
  const gw = await startGateway({ mock });
  const good = '{"model":"fast","messages":[{"role":"user","content":"hi"}]}';
  const cases = [
    [`${good} trailing`, /after the JSON value/],
    [`${good}{}`, /after the JSON value/],
    ['{"model":"fast","messages":[{"role":"user","content":"a\tb"}]}', /control character/],
    ['{"model":"fast\\u0000zzz","messages":[{"role":"user","content":"hi"}]}', /u0000/],
    ['{"model":"fast","messages":[{"role":"user","content":"keep\\u0000this"}]}', /u0000/],
    ['{"model":"fast","messages":[{"role":"user","content":"\\ud800"}]}', /surrogate/],
    ['{"model":"fast","model":"smart","messages":[{"role":"user","content":"hi"}]}', /duplicate key/],
  ];
  for (const [body, re] of cases) {
    const r = await postChat(gw, body);
    assert.equal(r.status, 400, body);
    const j = await r.json();
    assert.match(j.error.message, re, body);
    assert.equal(j.error.code, 'invalid_json');
  }
  // Invalid UTF-8: refused, and the error body is valid UTF-8 JSON that does not echo it.
  const raw = Buffer.concat([Buffer.from('{"model":"fa'), Buffer.from([0xff, 0xfe]), Buffer.from('st","messages":[{"role":"user","content":"hi"}]}')]);
  let r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: raw });
  assert.equal(r.status, 400);
  let buf = Buffer.from(await r.arrayBuffer());
  assert.ok(!buf.includes(Buffer.from([0xff])), 'raw byte not echoed');
  assert.match(JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(buf)).error.message, /UTF-8/);
  // A long model name with multi-byte characters cut in an error message stays valid UTF-8.
  const longModel = 'é'.repeat(300);
  r = await postChat(gw, { model: longModel, messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(r.status, 404);
  buf = Buffer.from(await r.arrayBuffer());
  JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(buf));
  // The gateway still serves.
  r = await postChat(gw, good);
  assert.equal(r.status, 200);
  await r.json();
  await gw.stopClean();
});

// ---- 3. provider secrets echoed by an upstream never reach a client or a log -------------

// An upstream that echoes the bearer token it received in every kind of failure, chosen by
// the last user message: "status401", "status403", "midstream", "ok200err" (Cortex: a 200
// whose JSON body is an error).
function echoingUpstream() {
  return startScripted((req, res, body) => {
    const tok = (req.headers.authorization || '').replace(/^Bearer /, '');
    const j = JSON.parse(body);
    const what = j.messages[j.messages.length - 1].content;
    const msg = `invalid credentials: ${tok} (Authorization: Bearer ${tok})`;
    const cortex = req.url.includes('/api/v2/cortex/');
    const errBody = cortex && !req.url.includes('/v1/chat')
      ? JSON.stringify({ message: msg, code: tok, request_id: 'r-1' })
      : JSON.stringify({ error: { message: msg, type: 'invalid_request_error', code: tok } });
    if (what === 'status401' || what === 'status403') {
      res.writeHead(what === 'status401' ? 401 : 403, { 'content-type': 'application/json' });
      res.end(errBody);
    } else if (what === 'ok200err') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: msg, message: msg }));
    } else {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      if (cortex && !req.url.includes('/v1/chat')) {
        res.write(`event: message\ndata: ${JSON.stringify({ choices: [{ delta: { content: 'Hi' } }] })}\n\n`);
        res.end(`event: message\ndata: ${JSON.stringify({ error: msg, code: '390500' })}\n\n`);
      } else {
        res.write(`data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: 'Hi' } }] })}\n\n`);
        res.end(`data: ${JSON.stringify({ error: { message: msg, code: tok } })}\n\n`);
      }
    }
  });
}

async function allFailures(gw, model, seen) {
  for (const what of ['status401', 'status403', 'midstream', 'ok200err']) {
    for (const stream of [false, true]) {
      if (what === 'midstream' && !stream) continue;
      const r = await postChat(gw, { model, stream, messages: [{ role: 'user', content: what }] });
      const text = await r.text();
      seen.push(text);
      assert.ok(r.status >= 400 || /error/.test(text), `${model} ${what} ${stream}: ${r.status} ${text}`);
    }
  }
}

function assertNoSecret(texts, secrets) {
  for (const s of secrets) {
    for (const t of texts) assert.ok(!t.includes(s), `secret ${s.slice(0, 8)}… found in: ${t.slice(0, 400)}`);
  }
}

test('secrets echoed by upstreams are redacted: Lambda key, opaque and JWT PATs, key-pair JWTs, URL user-info', async () => {
  const up = await echoingUpstream();
  cleanup.push(up);
  const LAMBDA_KEY = `lambda-key-${Math.random().toString(36).slice(2)}`;
  const OPAQUE = `sfpat_${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
  const JWT_PAT = makePat(30 * 86400);
  const USERINFO = `pw${Math.random().toString(36).slice(2)}`;
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const { run } = await import('./lib.mjs');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sg-redact-'));
  const keyFile = path.join(dir, 'k.p8');
  assert.equal((await run('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', keyFile])).code, 0);
  const models = [{ id: 'llama3.1-70b' }, { id: 'oa', upstream_id: 'llama3.1-70b', api: 'openai' }];
  const base = up.url.replace('http://', `http://user:${USERINFO}@`);
  const gw = await startGateway({
    env: noLambda,
    config: {
      upstream: { max_retries: 0 },
      providers: {
        lambda: { base_url: `${base}/v1`, api_key: LAMBDA_KEY, models: [{ id: 'm' }] },
        cx_opaque: { kind: 'cortex', account: 'a', user: 'u', pat: OPAQUE, base_url: up.url, models: models.map((m) => ({ ...m, id: `o-${m.id}` })) },
        cx_jwt: { kind: 'cortex', account: 'a', user: 'u', pat: JWT_PAT, base_url: up.url, models: models.map((m) => ({ ...m, id: `j-${m.id}` })) },
        cx_kp: { kind: 'cortex', account: 'a', user: 'u', private_key_path: keyFile, base_url: up.url, models: models.map((m) => ({ ...m, id: `k-${m.id}` })) },
      },
    },
  });
  const seen = [];
  for (const model of ['lambda/m', 'cx_opaque/o-llama3.1-70b', 'cx_opaque/o-oa', 'cx_jwt/j-llama3.1-70b', 'cx_jwt/j-oa',
    'cx_kp/k-llama3.1-70b', 'cx_kp/k-oa']) {
    await allFailures(gw, model, seen);
  }
  const prov = await (await fetch(`${gw.url}/v1/providers`)).text();
  seen.push(prov);
  // Every token the upstream received, including the key-pair JWTs the gateway generated.
  const sent = up.requests.map((r) => (r.headers.authorization || '').replace(/^Bearer /, ''));
  const kpJwts = [...new Set(sent.filter((t) => t.startsWith('eyJ') && t !== JWT_PAT))];
  assert.ok(kpJwts.length >= 1, 'key-pair JWTs were sent');
  assert.ok(seen.some((t) => /redacted/.test(t)), 'redaction marker visible');
  await gw.stopClean();
  assertNoSecret([...seen, gw.err, gw.out], [LAMBDA_KEY, OPAQUE, JWT_PAT, USERINFO, ...kpJwts]);
  fs.rmSync(dir, { recursive: true, force: true });
});

// ---- 5. slow and oversized bodies ----------------------------------------------------------

test('a body that trickles in gets 408 at limits.body_timeout_ms; a chunk over max_body_bytes gets 413 at once', async () => {
  const mock = await startMock();
  cleanup.push(mock);
  const gw = await startGateway({ mock, config: { limits: { body_timeout_ms: 1500, idle_timeout_ms: 5000 } } });
  // 1 byte every 0.3 s: never idle for 5 s, but the whole body takes far longer than 1.5 s.
  const t0 = Date.now();
  const s = net.connect(gw.port, '127.0.0.1');
  await new Promise((r) => s.on('connect', r));
  let got = '';
  s.on('data', (d) => { got += d; });
  const closed = new Promise((r) => s.on('close', r));
  s.on('error', () => {});
  s.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n');
  const iv = setInterval(() => { if (!s.destroyed) s.write('{'); }, 300);
  await Promise.race([closed, sleep(8000)]);
  clearInterval(iv);
  const took = Date.now() - t0;
  assert.match(got, /^HTTP\/1\.1 408 /, got);
  assert.match(got, /body_timeout_ms/);
  assert.ok(took >= 1300 && took < 3500, `answered after ${took} ms`);
  // A chunk size above max_body_bytes: refused before any of its bytes are sent.
  const t1 = Date.now();
  const s2 = net.connect(gw.port, '127.0.0.1');
  await new Promise((r) => s2.on('connect', r));
  let got2 = '';
  s2.on('data', (d) => { got2 += d; });
  s2.on('error', () => {});
  const closed2 = new Promise((r) => s2.on('close', r));
  s2.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFF\r\n');
  await Promise.race([closed2, sleep(5000)]);
  assert.match(got2, /^HTTP\/1\.1 413 /, got2);
  assert.ok(Date.now() - t1 < 1000, `413 after ${Date.now() - t1} ms`);
  await gw.stopClean();
});

// ---- 6. shutdown ends running requests with an error, not a truncated body ---------------

test('shutdown grace over: running streams get a server_shutting_down error event, waiting requests a 503', async () => {
  const mock = await startMock();
  cleanup.push(mock);
  const gw = await startGateway({ mock, config: { shutdown_grace_ms: 500 } });
  const open = (stream, directive) => {
    const body = JSON.stringify({ model: 'fast', stream, messages: [{ role: 'user', content: `hi ${directive}` }] });
    const s = net.connect(gw.port, '127.0.0.1');
    const c = { text: '' };
    s.on('connect', () => s.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`));
    s.on('data', (d) => { c.text += d; });
    s.on('error', () => {});
    c.closed = new Promise((r) => s.on('close', r));
    return c;
  };
  const streaming = open(true, '[mock:itl_ms=100,tokens=100]');
  const waiting = open(false, '[mock:ttft_ms=10000]');
  assert.ok(await waitFor(() => (streaming.text.match(/data: /g) || []).length >= 3, 3000), 'stream started');
  gw.child.kill('SIGTERM');
  await Promise.all([streaming.closed, waiting.closed]);
  const events = streaming.text.split('\r\n').filter((l) => l.startsWith('data: '));
  const last = events.at(-1);
  assert.match(last, /"code":"server_shutting_down"/, `last event: ${last}`);
  assert.ok(!streaming.text.includes('[DONE]'));
  assert.match(streaming.text, /\r\n0\r\n\r\n$/, 'the chunked body is terminated, not truncated');
  assert.match(waiting.text, /^HTTP\/1\.1 503 /, waiting.text);
  assert.match(waiting.text, /server_shutting_down/);
  const e = await gw.exitPromise;
  assert.deepEqual(e, { code: 0, signal: null });
  assert.doesNotMatch(gw.err, /AddressSanitizer|LeakSanitizer|runtime error:/);
  const lines = gw.logLines().filter((l) => l.msg === 'request' && l.path === '/v1/chat/completions');
  assert.equal(lines.length, 2);
  for (const l of lines) assert.equal(l.outcome, 'shutdown', JSON.stringify(l));
});

// ---- 7. `make run` never forwards to a stranger's port -------------------------------------

test('scripts/run.sh: MOCK_LISTEN taken → a clear error; 9000 taken → a free port, said, and the gateway works', async () => {
  const { spawn } = await import('node:child_process');
  const { BUILD } = await import('./lib.mjs');
  // Something else holds a port (and 9000, when it is free).
  const squatter = net.createServer((s) => { s.end('HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nstranger'); });
  await new Promise((r) => squatter.listen(0, '127.0.0.1', r));
  const taken = squatter.address().port;
  const squat9000 = net.createServer((s) => { s.end('HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nstranger'); });
  await new Promise((r) => { squat9000.once('error', r); squat9000.listen(9000, '127.0.0.1', r); });
  const runScript = (env) => {
    const p = spawn('scripts/run.sh', [BUILD], { env: { ...process.env, LAMBDA_BASE_URL: '', SNOWFLAKE_ACCOUNT: '', SOPHIA_CONFIG: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    p.err = '';
    p.stderr.on('data', (d) => { p.err += d; });
    p.stdout.on('data', (d) => { p.err += d; });
    p.done = new Promise((r) => p.on('exit', (code) => r(code)));
    return p;
  };
  try {
    const p1 = runScript({ MOCK_LISTEN: `127.0.0.1:${taken}`, SOPHIA_LISTEN: '127.0.0.1:0' });
    const code = await Promise.race([p1.done, sleep(10000).then(() => 'timeout')]);
    assert.notEqual(code, 0, 'run.sh must fail');
    assert.notEqual(code, 'timeout', `run.sh kept running: ${p1.err}`);
    assert.match(p1.err, new RegExp(`MOCK_LISTEN=127\\.0\\.0\\.1:${taken}`));

    const p2 = runScript({ SOPHIA_LISTEN: '127.0.0.1:0' });
    const port = await waitFor(() => {
      const m = p2.err.match(/"msg":"sophia-gateway listening".*?"port":(\d+)/);
      return m && Number(m[1]);
    }, 10000);
    assert.ok(port, p2.err);
    assert.match(p2.err, /127\.0\.0\.1:9000 is taken; the simulated upstream uses 127\.0\.0\.1:\d+ instead/);
    const r = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'fast', messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(r.status, 200);
    assert.match((await r.json()).choices[0].message.content, /The quick/);
    p2.kill('SIGTERM');
    assert.equal(await Promise.race([p2.done, sleep(10000).then(() => 'timeout')]) !== 'timeout', true);
  } finally {
    squatter.close();
    squat9000.close();
  }
});

// ---- 8. configuration that cannot work does not pass silently ----------------------------

async function checkConfig(env, args = []) {
  const { run, GATEWAY_BIN } = await import('./lib.mjs');
  return run(GATEWAY_BIN, ['--check-config', ...args], {
    timeout: 5000,
    env: {
      ...process.env, LAMBDA_BASE_URL: '', LAMBDA_API_KEY: '', SOPHIA_LISTEN: '', SNOWFLAKE_ACCOUNT: '',
      SNOWFLAKE_USER: '', SNOWFLAKE_PAT: '', SNOWFLAKE_PRIVATE_KEY_PATH: '', SNOWFLAKE_BASE_URL: '', ...env,
    },
  });
}

test('--check-config: no provider, SNOWFLAKE_* without the account, LAMBDA_API_KEY alone, /api/v2 base URL', async () => {
  let r = await checkConfig({});
  assert.equal(r.code, 2, r.stderr + r.stdout);
  assert.match(r.stderr, /no provider configured.*LAMBDA_BASE_URL.*SNOWFLAKE_ACCOUNT/);

  r = await checkConfig({ SNOWFLAKE_USER: 'svc', SNOWFLAKE_PAT: makePat(86400) });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /config error: env:SNOWFLAKE_ACCOUNT: .*SNOWFLAKE_USER.*SNOWFLAKE_PAT.*set SNOWFLAKE_ACCOUNT/);

  r = await checkConfig({ LAMBDA_API_KEY: 'some-key-123', SNOWFLAKE_ACCOUNT: 'acct', SNOWFLAKE_USER: 'u', SNOWFLAKE_PAT: makePat(86400) });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /config warning: env:LAMBDA_API_KEY: .*LAMBDA_BASE_URL is not set/);
  assert.ok(!r.stderr.includes('some-key-123'));

  r = await checkConfig({ SNOWFLAKE_ACCOUNT: 'acct', SNOWFLAKE_USER: 'u', SNOWFLAKE_PAT: makePat(86400), SNOWFLAKE_BASE_URL: 'http://127.0.0.1:9/api/v2' });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /config error: env:SNOWFLAKE_BASE_URL: .*\/api\/v2/);

  r = await checkConfig({ LAMBDA_BASE_URL: 'http://127.0.0.1:9' });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /config warning: env:LAMBDA_BASE_URL: .*\/v1/);

  const { run, GATEWAY_BIN } = await import('./lib.mjs');
  const help = await run(GATEWAY_BIN, ['--help']);
  assert.doesNotMatch(help.stdout, /validate the configuration and credentials/);
  assert.match(help.stdout, /does not contact/);
});

// ---- 9. error messages that point the right way ------------------------------------------

test('errors name the real cause: provider credentials, a base URL without /v1, TLS to plain HTTP, which timeout', async () => {
  const up = await startScripted((req, res) => {
    if (!req.url.startsWith('/v1/')) { res.writeHead(404, { 'content-type': 'application/json' }); res.end('{"detail":"Not Found"}'); return; }
    if (req.headers.authorization !== 'Bearer right-key-123') {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end('{"error":{"message":"Invalid API key","type":"invalid_request_error","code":"invalid_api_key"}}');
      return;
    }
    setTimeout(() => { res.writeHead(200); res.end('{}'); }, 2000);
  });
  cleanup.push(up);
  const msg = async (gw) => {
    const r = await postChat(gw, { model: 'lambda/llama3.1-8b-instruct', messages: [{ role: 'user', content: 'hi' }] });
    return { status: r.status, j: await r.json() };
  };
  const start = (base, key, extra = {}) => startGateway({ env: { LAMBDA_BASE_URL: base, LAMBDA_API_KEY: key }, config: extra });
  const gwKey = await start(`${up.url}/v1`, 'wrong-key-456');
  let { status, j } = await msg(gwKey);
  assert.equal(status, 401);
  assert.match(j.error.message, /gateway's credentials for provider 'lambda'.*rejected/);
  await gwKey.stopClean();

  const gwNoV1 = await start(up.url, 'right-key-123');
  ({ status, j } = await msg(gwNoV1));
  assert.equal(status, 404);
  assert.match(j.error.message, /\/v1/);
  await gwNoV1.stopClean();

  const gwTls = await start(`${up.url.replace('http:', 'https:')}/v1`, 'right-key-123');
  ({ status, j } = await msg(gwTls));
  assert.equal(status, 502);
  assert.match(j.error.message, /http:\/\//);
  await gwTls.stopClean();

  const gwSlow = await start(`${up.url}/v1`, 'right-key-123', { upstream: { first_byte_timeout_ms: 300 } });
  ({ status, j } = await msg(gwSlow));
  assert.equal(status, 504);
  assert.match(j.error.message, /'lambda'/);
  assert.match(j.error.message, /first_byte_timeout_ms/);
  assert.match(j.error.message, /300 ms/);
  await gwSlow.stopClean();
});

test('the Cortex 401 message names the Snowflake request id once', async () => {
  const mock = await startMock(['--snowflake-token', 'right-token-xyz']);
  cleanup.push(mock);
  const gw = await startGateway({ env: noLambda, config: { providers: { cortex: { account: 'a', user: 'u', pat: 'wrong-token-abc', base_url: mock.url } } } });
  const r = await postChat(gw, { model: 'cortex/llama3.1-70b', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(r.status, 401);
  const j = await r.json();
  const ids = j.error.message.match(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g) || [];
  assert.equal(ids.length, 1, j.error.message);
  await gw.stopClean();
});

// ---- 10. the README tells the truth ----------------------------------------------------------

test('README: its configuration example is valid, it documents what the issue asked, and it stays in the repository', async () => {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const readme = fs.readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  assert.ok(!readme.includes('../shared'), 'no link outside the repository');
  for (const f of readme.matchAll(/`(docs\/[a-z_-]+\.md)`/g))
    assert.ok(fs.existsSync(new URL(`../../${f[1]}`, import.meta.url)), `${f[1]} exists`);
  const block = readme.match(/```jsonc\n([\s\S]*?)```/)[1];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sg-readme-'));
  const pat = makePat(30 * 86400);
  fs.writeFileSync(path.join(dir, 'pat'), pat);
  const text = block.replace('/run/secrets/snowflake_pat', path.join(dir, 'pat'));
  fs.writeFileSync(path.join(dir, 'c.json'), text);
  const r = await checkConfig({ LAMBDA_BASE_URL: 'http://127.0.0.1:9/v1', LAMBDA_API_KEY: 'k-123456', SNOWFLAKE_ACCOUNT: 'myorg-myacct' },
    ['--config', path.join(dir, 'c.json')]);
  assert.equal(r.code, 0, `the README's configuration: ${r.stderr}`);
  // The keys, limits, budgets and ledger example too (with a real hash in place of "…").
  const keysBlock = [...readme.matchAll(/```jsonc\n([\s\S]*?)```/g)][1][1]
    .replace('"sha256:…"', `"sha256:${'ab'.repeat(32)}"`);
  fs.writeFileSync(path.join(dir, 'k.json'), keysBlock);
  const rk = await checkConfig({ LAMBDA_BASE_URL: 'http://127.0.0.1:9/v1', SOPHIA_ADMIN_KEY_2: 'admin-key-0123456789abcdef' },
    ['--config', path.join(dir, 'k.json')]);
  assert.equal(rk.code, 0, `the README's keys configuration: ${rk.stderr}`);
  const flat = readme.replace(/\s+/g, ' ');
  for (const must of [/MOCK_LISTEN/, /network policy/, /--snowflake-token/, /without `\/api\/v2`/, /liveness only/,
    /`model` field of every answer/, /role restriction/, /body_timeout_ms/, /server_shutting_down/])
    assert.match(flat, must);
  fs.rmSync(dir, { recursive: true, force: true });
});

// ---- the proxy environment is honoured (read once at start) --------------------------------

test('http_proxy: upstream requests go through the proxy; no_proxy bypasses it', async () => {
  const completion = JSON.stringify({
    id: 'chatcmpl-p', object: 'chat.completion', created: 1, model: 'm',
    choices: [{ index: 0, message: { role: 'assistant', content: 'via proxy' }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
  });
  const proxy = await startScripted((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(completion);
  });
  const env = {
    LAMBDA_BASE_URL: 'http://upstream.invalid:9/v1', LAMBDA_API_KEY: 'k-123456', SNOWFLAKE_ACCOUNT: '',
    http_proxy: proxy.url, no_proxy: '', NO_PROXY: '',
  };
  const gw = await startGateway({ env });
  const r = await postChat(gw, { model: 'lambda/m', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(r.status, 200);
  assert.equal((await r.json()).choices[0].message.content, 'via proxy');
  // An HTTP proxy gets the absolute URL of the upstream.
  assert.equal(proxy.requests.at(-1).url, 'http://upstream.invalid:9/v1/chat/completions');
  await gw.stopClean();
  // The upstream's host in no_proxy: straight to it (which does not exist here).
  const gw2 = await startGateway({ env: { ...env, no_proxy: 'upstream.invalid' } });
  const seen = proxy.requests.length;
  const r2 = await postChat(gw2, { model: 'lambda/m', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(r2.status, 502);
  assert.equal(proxy.requests.length, seen);
  await gw2.stopClean();
  await proxy.close();
});
