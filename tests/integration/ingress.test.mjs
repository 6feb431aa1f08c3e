// Ingress: endpoints, errors in OpenAI shape, limits, keep-alive, pipelining, chunked bodies,
// Expect: 100-continue, CORS, request ids.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startMock, startGateway, rawRequest, sleep, chatBody } from './lib.mjs';

let mock, gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway({
    mock,
    config: {
      limits: { max_body_bytes: 4096, max_header_bytes: 2048, header_timeout_ms: 500, idle_timeout_ms: 1500 },
      cors: { allowed_origins: ['https://app.example.com'] },
    },
  });
});

after(async () => {
  await gw.stopClean();
  await mock.stopClean();
});

function assertOpenAIError(body, status, res) {
  assert.equal(res.status, status);
  assert.match(res.headers.get('content-type'), /application\/json/);
  assert.equal(typeof body.error.message, 'string');
  assert.ok(body.error.message.length > 0);
  assert.equal(typeof body.error.type, 'string');
  assert.ok('code' in body.error);
}

test('GET /healthz answers ok', async () => {
  const r = await fetch(`${gw.url}/healthz`);
  assert.equal(r.status, 200);
  assert.equal((await r.json()).status, 'ok');
});

test('GET /v1/models lists the configured catalog with aliases', async () => {
  const r = await fetch(`${gw.url}/v1/models`);
  const j = await r.json();
  assert.equal(j.object, 'list');
  const ids = j.data.map((m) => m.id);
  assert.ok(ids.includes('lambda/llama3.1-8b-instruct'));
  assert.ok(ids.includes('fast'));
  for (const m of j.data) assert.equal(m.object, 'model');
});

test('unknown path is a 404 and wrong method a 405, both OpenAI-shaped', async () => {
  let r = await fetch(`${gw.url}/v1/nothing`);
  assertOpenAIError(await r.json(), 404, r);
  r = await fetch(`${gw.url}/v1/chat/completions`);
  assertOpenAIError(await r.json(), 405, r);
  r = await fetch(`${gw.url}/v1/models`, { method: 'DELETE' });
  assertOpenAIError(await r.json(), 405, r);
});

test('malformed JSON and missing messages are 400s that say what is wrong', async () => {
  let r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', body: '{"model": "x",' });
  let j = await r.json();
  assertOpenAIError(j, 400, r);
  assert.match(j.error.message, /not valid JSON/);
  r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', body: '{"model":"fast"}' });
  j = await r.json();
  assertOpenAIError(j, 400, r);
  assert.match(j.error.message, /messages/);
  r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', body: '{"model":"fast","messages":"hi"}' });
  j = await r.json();
  assertOpenAIError(j, 400, r);
  assert.match(j.error.message, /messages/);
  r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', body: chatBody({ model: 'no-such-model' }) });
  j = await r.json();
  assertOpenAIError(j, 404, r);
  assert.equal(j.error.code, 'model_not_found');
});

test('every response carries X-Request-Id: the client one, or a new one', async () => {
  let r = await fetch(`${gw.url}/healthz`, { headers: { 'x-request-id': 'client-id-123' } });
  assert.equal(r.headers.get('x-request-id'), 'client-id-123');
  r = await fetch(`${gw.url}/nope`);
  assert.match(r.headers.get('x-request-id'), /^[0-9a-f]{32}$/);
  // an unsafe client id is replaced, never echoed
  r = await fetch(`${gw.url}/healthz`, { headers: { 'x-request-id': 'bad id<script>' } });
  assert.match(r.headers.get('x-request-id'), /^[0-9a-f]{32}$/);
  r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', body: chatBody(), headers: { 'x-request-id': 'chat-1' } });
  assert.equal(r.headers.get('x-request-id'), 'chat-1');
  await r.text();
});

test('body over the limit is a 413 (Content-Length and chunked)', async () => {
  const big = 'x'.repeat(5000);
  let r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', body: big });
  assertOpenAIError(await r.json(), 413, r);
  const chunked = `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n` +
    `1000\r\n${'y'.repeat(4096)}\r\n1000\r\n${'y'.repeat(4096)}\r\n0\r\n\r\n`;
  const out = await rawRequest(gw.port, chunked);
  assert.match(out, /^HTTP\/1\.1 413 /);
});

test('headers over the limit are a 431', async () => {
  const out = await rawRequest(gw.port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(4000)}\r\n\r\n`);
  assert.match(out, /^HTTP\/1\.1 431 /);
  assert.match(out, /"error":\{"message":/);
});

test('slow headers get a 408 and the connection closes', async () => {
  const t0 = Date.now();
  const out = await rawRequest(gw.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n', 3000);
  assert.match(out, /^HTTP\/1\.1 408 /);
  assert.ok(Date.now() - t0 < 2500, 'closed after the header timeout');
});

test('idle keep-alive connections are closed after the idle timeout', async () => {
  const s = net.connect(gw.port, '127.0.0.1');
  await new Promise((r) => s.on('connect', r));
  const closed = new Promise((r) => s.on('close', r));
  s.resume(); // read (and drop) the response so the close is seen
  s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  const t0 = Date.now();
  await closed;
  const dt = Date.now() - t0;
  assert.ok(dt >= 1000 && dt < 4000, `closed after ${dt} ms`);
});

test('pipelined requests are answered in order on one connection', async () => {
  const reqs = ['/healthz', '/nope', '/v1/models'].map((p, i) =>
    `GET ${p} HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe-${i}\r\n\r\n`).join('') +
    `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe-3\r\nContent-Length: ${chatBody().length}\r\n\r\n${chatBody()}` +
    'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe-4\r\nConnection: close\r\n\r\n';
  const out = await rawRequest(gw.port, reqs, 3000);
  const statuses = [...out.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
  const ids = [...out.matchAll(/X-Request-Id: (pipe-\d)/g)].map((m) => m[1]);
  assert.deepEqual(statuses, ['200', '404', '200', '200', '200']);
  assert.deepEqual(ids, ['pipe-0', 'pipe-1', 'pipe-2', 'pipe-3', 'pipe-4']);
});

test('chunked request bodies are accepted', async () => {
  const body = chatBody();
  const half = Math.floor(body.length / 2);
  const req = 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n' +
    `${half.toString(16)}\r\n${body.slice(0, half)}\r\n${(body.length - half).toString(16)}\r\n${body.slice(half)}\r\n0\r\n\r\n`;
  const out = await rawRequest(gw.port, req, 3000);
  assert.match(out, /^HTTP\/1\.1 200 /);
  assert.match(out, /"chat\.completion"/);
});

test('Expect: 100-continue is answered at once, before the body is sent', async () => {
  const body = chatBody();
  const s = net.connect(gw.port, '127.0.0.1');
  await new Promise((r) => s.on('connect', r));
  let got = '';
  s.on('data', (d) => { got += d; });
  s.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`);
  await sleep(300);
  assert.match(got, /^HTTP\/1\.1 100 Continue\r\n\r\n$/);
  s.write(body);
  await new Promise((r) => s.on('close', r));
  assert.match(got, /HTTP\/1\.1 200 OK/);
  // an oversized body announced with Expect gets the 413 instead of the 100
  const out = await rawRequest(gw.port, 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\nExpect: 100-continue\r\n\r\n');
  assert.match(out, /^HTTP\/1\.1 413 /);
  assert.doesNotMatch(out, /100 Continue/);
});

test('CORS: preflight for an allowed origin, refusal for another, headers on responses', async () => {
  let r = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'OPTIONS',
    headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
  });
  assert.equal(r.status, 204);
  assert.equal(r.headers.get('access-control-allow-origin'), 'https://app.example.com');
  assert.match(r.headers.get('access-control-allow-methods'), /POST/);
  assert.match(r.headers.get('access-control-allow-headers'), /authorization/);
  r = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'OPTIONS',
    headers: { origin: 'https://evil.example.net', 'access-control-request-method': 'POST' },
  });
  assert.equal(r.status, 403);
  assert.equal(r.headers.get('access-control-allow-origin'), null);
  r = await fetch(`${gw.url}/healthz`, { headers: { origin: 'https://app.example.com' } });
  assert.equal(r.headers.get('access-control-allow-origin'), 'https://app.example.com');
  assert.match(r.headers.get('access-control-expose-headers'), /X-Request-Id/i);
  r = await fetch(`${gw.url}/healthz`, { headers: { origin: 'https://evil.example.net' } });
  assert.equal(r.headers.get('access-control-allow-origin'), null);
});

test('malformed HTTP gets a 400 and the process stays healthy', async () => {
  const out = await rawRequest(gw.port, 'BLAH / HTTP/1.1\r\n\r\n');
  assert.match(out, /^HTTP\/1\.1 400 /);
  const out2 = await rawRequest(gw.port, 'GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n');
  assert.match(out2, /^HTTP\/1\.1 400 /);
  const r = await fetch(`${gw.url}/healthz`);
  assert.equal(r.status, 200);
});

test('maximum connections: extra connections get a 503', async () => {
  const small = await startGateway({ mock, config: { limits: { max_connections: 3 } } });
  const socks = [];
  for (let i = 0; i < 3; i++) {
    const s = net.connect(small.port, '127.0.0.1');
    s.on('error', () => {});
    await new Promise((r) => s.on('connect', r));
    socks.push(s);
  }
  await sleep(100);
  const out = await rawRequest(small.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.match(out, /^HTTP\/1\.1 503 /);
  for (const s of socks) s.destroy();
  await sleep(100);
  const r = await fetch(`${small.url}/healthz`);
  assert.equal(r.status, 200);
  await small.stopClean();
});
