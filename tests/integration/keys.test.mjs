// Client and admin keys end to end: 401 in OpenAI's shape on every client route without a key
// or with a wrong one; Bearer (any case) and x-api-key; the official openai and Anthropic SDKs;
// /admin/ behind admin keys (SOPHIA_ADMIN_KEY and "admin_keys" hashes; 403 when none exist);
// the probes and OPTIONS stay open; `sophia-gateway hash-key`; the loopback rule at start and
// on reload; and no key ever in the gateway's log.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, waitFor, GATEWAY_BIN } from './lib.mjs';

const sha = (k) => `sha256:${crypto.createHash('sha256').update(k).digest('hex')}`;
const LAMBDA = 'lambda/llama3.1-8b-instruct';
const CLIENT_KEY = 'sk-sophia-alice-0b7c1d2e3f4a5b6c';
const OTHER_KEY = 'sk-sophia-bob-9f8e7d6c5b4a3b2c';
const WRONG_KEY = 'sk-sophia-wrong-5e6f7a8b9c0d1e2f';
const ADMIN_ENV = 'admin-from-env-3c4d5e6f7a8b9c0d';
const ADMIN_FILE = 'admin-from-file-1a2b3c4d5e6f7a8b';
const ALL_KEYS = [CLIENT_KEY, OTHER_KEY, WRONG_KEY, ADMIN_ENV, ADMIN_FILE];
const noEnv = { LAMBDA_API_KEY: '', SNOWFLAKE_ACCOUNT: '', SOPHIA_ADMIN_KEY: '', SOPHIA_LISTEN: '' };

let mock;
let gw;
const procs = [];

before(async () => {
  mock = await startMock();
  procs.push(mock);
  gw = await startGateway({
    mock,
    env: { ...noEnv, SOPHIA_ADMIN_KEY: ADMIN_ENV },
    config: {
      teams: [{ name: 'research', limits: { rpm: 1000 } }],
      keys: [
        { name: 'alice', hash: sha(CLIENT_KEY), team: 'research' },
        // upper-case hex is accepted too
        { name: 'bob', hash: `sha256:${sha(OTHER_KEY).slice(7).toUpperCase()}` },
      ],
      admin_keys: [sha(ADMIN_FILE)],
    },
  });
  procs.push(gw);
});

after(async () => {
  for (const p of procs.reverse()) if (!p.exited) await p.stopClean();
  for (const k of ALL_KEYS) assert.ok(!gw.err.includes(k), 'a key in the log');
});

const chatBody = (extra = {}) => JSON.stringify({ model: LAMBDA, messages: [{ role: 'user', content: 'Say hello' }], ...extra });

const clientRoutes = [
  ['POST', '/v1/chat/completions', chatBody()],
  ['POST', '/chat/completions', chatBody()],
  ['POST', '/v1/responses', JSON.stringify({ model: LAMBDA, input: 'hi' })],
  ['POST', '/responses', JSON.stringify({ model: LAMBDA, input: 'hi' })],
  ['POST', '/v1/embeddings', JSON.stringify({ model: 'lambda/bge-m3', input: 'hi' })],
  ['POST', '/embeddings', JSON.stringify({ model: 'lambda/bge-m3', input: 'hi' })],
  ['POST', '/v1/messages', JSON.stringify({ model: LAMBDA, max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] })],
  ['GET', '/v1/models', null],
  ['GET', '/models', null],
  ['GET', `/v1/models/${encodeURIComponent(LAMBDA)}`, null],
  ['GET', '/v1/providers', null],
];

const call = (method, p, body, headers = {}) =>
  fetch(`${gw.url}${p}`, { method, headers: { 'content-type': 'application/json', ...headers }, body: body ?? undefined });

test('every client route: 401 invalid_api_key without a key, with a wrong one, with an admin key', async () => {
  for (const [method, p, body] of clientRoutes) {
    for (const [headers, msg] of [
      [{}, /^You didn't provide an API key/],
      [{ authorization: 'Basic YWxpY2U6c2VjcmV0' }, /^You didn't provide an API key/],
      [{ authorization: 'Bearer ' }, /^You didn't provide an API key/],
      [{ authorization: `Bearer ${WRONG_KEY}` }, /^Incorrect API key provided/],
      [{ 'x-api-key': WRONG_KEY }, /^Incorrect API key provided/],
      [{ authorization: `Bearer ${ADMIN_ENV}` }, /^Incorrect API key provided/],
    ]) {
      const r = await call(method, p, body, headers);
      assert.equal(r.status, 401, `${method} ${p} ${JSON.stringify(headers)}`);
      assert.match(r.headers.get('content-type'), /application\/json/);
      const text = await r.text();
      const j = JSON.parse(text);
      assert.equal(j.error.type, 'invalid_request_error');
      assert.equal(j.error.code, 'invalid_api_key');
      assert.match(j.error.message, msg);
      for (const k of ALL_KEYS) assert.ok(!text.includes(k), 'the key is not echoed');
    }
  }
  // each refusal has its request line
  const want = clientRoutes.length * 6;
  const lines = await waitFor(() => {
    const l = gw.logLines().filter((x) => x.msg === 'request' && x.status === 401);
    return l.length >= want && l;
  });
  assert.ok(lines, 'a request line for each refusal');
});

test('Bearer (any case) and x-api-key are both accepted; the record names the key', async () => {
  for (const headers of [
    { authorization: `Bearer ${CLIENT_KEY}` },
    { authorization: `bearer ${CLIENT_KEY}` },
    { authorization: `BEARER ${CLIENT_KEY}` },
    { 'x-api-key': CLIENT_KEY },
    { 'x-api-key': OTHER_KEY },
  ]) {
    const r = await call('POST', '/v1/chat/completions', chatBody(), headers);
    assert.equal(r.status, 200, JSON.stringify(headers));
    const j = await r.json();
    assert.match(j.choices[0].message.content, /^The quick brown fox/);
    const rid = r.headers.get('x-request-id');
    const line = await waitFor(() => gw.logLines().find((l) => l.msg === 'request' && l.request_id === rid));
    assert.equal(line.key, headers['x-api-key'] === OTHER_KEY ? 'bob' : 'alice');
  }
  for (const [method, p, body] of clientRoutes) {
    const r = await call(method, p, body, { authorization: `Bearer ${CLIENT_KEY}` });
    assert.equal(r.status, 200, `${method} ${p}: ${await r.clone().text()}`);
    await r.arrayBuffer();
  }
  const r = await call('GET', '/v1/models', null, { 'x-api-key': CLIENT_KEY });
  const rid = r.headers.get('x-request-id');
  const line = await waitFor(() => gw.logLines().find((l) => l.msg === 'request' && l.request_id === rid));
  assert.equal(line.key, 'alice');
});

test('the probes and OPTIONS need no key', async () => {
  for (const p of ['/healthz', '/readyz', '/metrics']) {
    const r = await call('GET', p, null);
    assert.equal(r.status, 200, p);
    await r.arrayBuffer();
  }
  for (const p of ['/v1/chat/completions', '/v1/messages', '/v1/models', '/admin/providers']) {
    const r = await call('OPTIONS', p, null);
    assert.equal(r.status, 204, p);
  }
  // a method the route does not take is 405 whatever the key
  const r = await call('GET', '/v1/chat/completions', null);
  assert.equal(r.status, 405);
});

test('openai SDK: the right apiKey works; a wrong one raises AuthenticationError (401)', async () => {
  const ok = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: CLIENT_KEY, maxRetries: 0 });
  const c = await ok.chat.completions.create({ model: LAMBDA, messages: [{ role: 'user', content: 'Say hello' }] });
  assert.match(c.choices[0].message.content, /^The quick brown fox/);
  const stream = await ok.chat.completions.create({ model: LAMBDA, stream: true, messages: [{ role: 'user', content: 'Say hello' }] });
  let acc = '';
  for await (const ch of stream) acc += ch.choices[0]?.delta?.content || '';
  assert.match(acc, /^The quick brown fox/);
  const models = await ok.models.list();
  assert.ok(models.data.some((m) => m.id === LAMBDA));
  const e = await ok.embeddings.create({ model: 'lambda/bge-m3', input: 'hi' });
  assert.ok(e.data[0].embedding.length > 0);

  const bad = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: WRONG_KEY, maxRetries: 0 });
  await assert.rejects(bad.chat.completions.create({ model: LAMBDA, messages: [{ role: 'user', content: 'hi' }] }),
    (err) => err instanceof OpenAI.AuthenticationError && err.status === 401 && err.code === 'invalid_api_key' &&
      !err.message.includes(WRONG_KEY));
  await assert.rejects(bad.models.list(), (err) => err instanceof OpenAI.AuthenticationError);
  await assert.rejects(bad.responses.create({ model: LAMBDA, input: 'hi' }), (err) => err.status === 401);
});

test('Anthropic SDK (x-api-key) against /v1/messages with a lambda model; a wrong key is AuthenticationError', async () => {
  const ok = new Anthropic({ baseURL: gw.url, apiKey: CLIENT_KEY, maxRetries: 0 });
  const m = await ok.messages.create({ model: LAMBDA, max_tokens: 64, messages: [{ role: 'user', content: 'Say hello' }] });
  assert.equal(m.type, 'message');
  assert.match(m.content[0].text, /^The quick brown fox/);
  const s = ok.messages.stream({ model: LAMBDA, max_tokens: 64, messages: [{ role: 'user', content: 'Say hello' }] });
  const fm = await s.finalMessage();
  assert.match(fm.content[0].text, /^The quick brown fox/);
  const bad = new Anthropic({ baseURL: gw.url, apiKey: WRONG_KEY, maxRetries: 0 });
  await assert.rejects(bad.messages.create({ model: LAMBDA, max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] }),
    (err) => err instanceof Anthropic.AuthenticationError && err.status === 401);
});

test('/admin/: 401 without or with a wrong admin key (a client key is not one); 200 with SOPHIA_ADMIN_KEY or an admin_keys hash', async () => {
  for (const headers of [{}, { authorization: `Bearer ${WRONG_KEY}` }, { authorization: `Bearer ${CLIENT_KEY}` }, { 'x-api-key': CLIENT_KEY }]) {
    const r = await call('GET', '/admin/providers', null, headers);
    assert.equal(r.status, 401, JSON.stringify(headers));
    const j = await r.json();
    assert.equal(j.error.code, 'invalid_api_key');
    assert.doesNotMatch(JSON.stringify(j), new RegExp(`${CLIENT_KEY}|${WRONG_KEY}`));
  }
  for (const headers of [{ authorization: `Bearer ${ADMIN_ENV}` }, { authorization: `Bearer ${ADMIN_FILE}` }, { 'x-api-key': ADMIN_FILE }]) {
    const r = await call('GET', '/admin/providers', null, headers);
    assert.equal(r.status, 200, JSON.stringify(headers));
    const j = await r.json();
    assert.equal(j.providers[0].name, 'lambda');
  }
  // an unknown admin path says nothing without a key, 404 with one
  assert.equal((await call('GET', '/admin/nothing-here', null)).status, 401);
  assert.equal((await call('POST', '/admin/providers', '{}')).status, 401);
  assert.equal((await call('GET', '/admin/nothing-here', null, { authorization: `Bearer ${ADMIN_ENV}` })).status, 404);
});

test('no admin key configured: /admin/ answers 403 and says how to set one; without client keys clients need none', async () => {
  const g = await startGateway({ mock, env: noEnv });
  procs.push(g);
  const r = await fetch(`${g.url}/admin/providers`, { headers: { authorization: `Bearer ${ADMIN_ENV}` } });
  assert.equal(r.status, 403);
  const j = await r.json();
  assert.equal(j.error.message, 'admin endpoints need an admin key: set SOPHIA_ADMIN_KEY or "admin_keys"');
  const c = await fetch(`${g.url}/v1/chat/completions`, { method: 'POST', body: chatBody() });
  assert.equal(c.status, 200);
  const c2 = await fetch(`${g.url}/v1/models`, { headers: { authorization: 'Bearer anything-at-all' } });
  assert.equal(c2.status, 200);
  await g.stopClean();
});

function hashKey(input) {
  return spawnSync(GATEWAY_BIN, ['hash-key'], { input, encoding: 'utf8' });
}

test('sophia-gateway hash-key: reads stdin, prints the "hash" line; that hash works as a configured key', async () => {
  const key = `sk-${crypto.randomBytes(24).toString('hex')}`;
  for (const input of [key, `${key}\n`, `${key}\r\n`]) {
    const r = hashKey(input);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `"hash": "${sha(key)}"\n`);
    assert.ok(!r.stderr.includes(key));
  }
  for (const input of ['', '\n', 'a\nb', `${key}\n\n`, 'tab\there', 'x'.repeat(5000)]) {
    const r = hashKey(input);
    assert.notEqual(r.status, 0, JSON.stringify(input.slice(0, 20)));
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /sophia-gateway hash-key: /);
  }
  const extra = spawnSync(GATEWAY_BIN, ['hash-key', key], { input: '', encoding: 'utf8' });
  assert.equal(extra.status, 2);
  const help = spawnSync(GATEWAY_BIN, ['--help'], { encoding: 'utf8' });
  assert.match(help.stdout, /hash-key/);

  const line = hashKey(`${key}\n`).stdout;
  const config = JSON.parse(`{"keys": [{"name": "cli", ${line.trim()}}]}`);
  const g = await startGateway({ mock, env: noEnv, config });
  procs.push(g);
  const ok = await fetch(`${g.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: chatBody() });
  assert.equal(ok.status, 200);
  const no = await fetch(`${g.url}/v1/chat/completions`, { method: 'POST', body: chatBody() });
  assert.equal(no.status, 401);
  await g.stopClean();
  assert.ok(!g.err.includes(key));
});

test('the loopback rule: no keys and --listen 0.0.0.0 exits with the fix; allow_unauthenticated or a key starts it', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sg-'));
  const env = { ...process.env, ...noEnv, LAMBDA_BASE_URL: `${mock.url}/v1` };
  const r = spawnSync(GATEWAY_BIN, ['--listen', '0.0.0.0:0'], { env, cwd: dir, encoding: 'utf8', timeout: 10000 });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /config error: \$\.keys: no client keys configured and listening on 0\.0\.0\.0: create a key with `sophia-gateway hash-key` and add it to "keys", or set "allow_unauthenticated": true/);
  const r6 = spawnSync(GATEWAY_BIN, ['--listen', '[::]:0'], { env, cwd: dir, encoding: 'utf8', timeout: 10000 });
  assert.equal(r6.status, 2);
  assert.match(r6.stderr, /listening on \[::\]/);
  // SOPHIA_LISTEN counts as well; --check-config reports it too
  const rl = spawnSync(GATEWAY_BIN, ['--check-config'], { env: { ...env, SOPHIA_LISTEN: '0.0.0.0:8080' }, cwd: dir, encoding: 'utf8', timeout: 10000 });
  assert.equal(rl.status, 2);
  assert.match(rl.stderr, /no client keys configured/);

  const open = await startGateway({ mock, env: noEnv, config: { allow_unauthenticated: true }, args: ['--listen', '0.0.0.0:0'] });
  procs.push(open);
  assert.equal((await fetch(`${open.url}/v1/chat/completions`, { method: 'POST', body: chatBody() })).status, 200);
  await open.stopClean();
});

test('a reload that would leave a gateway bound off loopback without keys is refused; keys stay enforced', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sg-'));
  const cfgPath = path.join(dir, 'config.json');
  // bound by the file's "listen" (no --listen override)
  fs.writeFileSync(cfgPath, JSON.stringify({ listen: '0.0.0.0:0', keys: [{ name: 'alice', hash: sha(CLIENT_KEY) }] }));
  const g = await startGateway({ mock, env: noEnv, cwd: dir, listen: false, args: ['--config', cfgPath] });
  procs.push(g);
  const auth = { authorization: `Bearer ${CLIENT_KEY}` };
  assert.equal((await fetch(`${g.url}/v1/models`, { headers: auth })).status, 200);
  assert.equal((await fetch(`${g.url}/v1/models`)).status, 401);
  // the file now names a loopback address and no keys: the server stays where it is bound
  fs.writeFileSync(cfgPath, JSON.stringify({ listen: '127.0.0.1:0' }));
  g.child.kill('SIGHUP');
  assert.ok(await waitFor(() => g.logLines().find((l) => l.msg === 'reload failed; the running configuration stays in force'), 5000));
  assert.ok(g.logLines().find((l) => l.msg === 'config error' && l.path === '$.keys' && /listening on 0\.0\.0\.0/.test(l.error)));
  assert.equal((await fetch(`${g.url}/v1/models`)).status, 401);
  // a new key list reloads fine
  fs.writeFileSync(cfgPath, JSON.stringify({ listen: '0.0.0.0:0', keys: [{ name: 'bob', hash: sha(OTHER_KEY) }] }));
  g.child.kill('SIGHUP');
  assert.ok(await waitFor(() => g.logLines().find((l) => l.msg === 'configuration reloaded'), 5000));
  assert.equal((await fetch(`${g.url}/v1/models`, { headers: auth })).status, 401);
  assert.equal((await fetch(`${g.url}/v1/models`, { headers: { 'x-api-key': OTHER_KEY } })).status, 200);
  await g.stopClean();
  for (const k of ALL_KEYS) assert.ok(!g.err.includes(k));
});
