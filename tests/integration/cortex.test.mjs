// Snowflake Cortex end to end, through the gateway, against mockllm in Cortex mode: PAT and
// key-pair auth, the three stream chunk shapes, tools, Guard, mid-stream errors, request
// translation errors, error mapping, retries, the OpenAI-compatible Cortex endpoint, PAT
// expiry reporting, credential rotation with SIGHUP under load, lambda + cortex side by side,
// and secrets never reaching a client or a log.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import {
  startMock, startGateway, mockStats, resetMockStats, waitFor, postChat, sseData, curl, run, sleep,
} from './lib.mjs';

const MODEL = 'cortex/llama3.1-70b';
const OA_MODEL = 'cortex/llama3.1-70b-oa'; // "api": "openai" (Cortex's OpenAI-compatible endpoint)
const ACCOUNT = 'myorg-myacct';
const USER = 'svc_gateway';

const WORDS = 'The quick brown fox jumps over the lazy dog while mock tokens stream steadily to clients'.split(' ');
const mockText = (n) => Array.from({ length: n }, (_, i) => `${WORDS[i % WORDS.length]} `).join('');
const mockPromptTokens = (messages) =>
  messages.reduce((s, m) => s + 3 + m.content.split(/\s+/).filter(Boolean).length, 0);
const msgs = (text) => [{ role: 'user', content: text }];

// ---- secrets ---------------------------------------------------------------------------

const b64u = (x) => Buffer.from(x).toString('base64url');
const nowS = () => Math.floor(Date.now() / 1000);
// A JWT-shaped PAT (the one observed Snowflake format): header.payload{exp}.signature.
function makePat(expOffsetS) {
  const header = { kid: crypto.randomBytes(6).toString('hex'), alg: 'ES256' };
  const payload = { p: crypto.randomBytes(12).toString('hex'), iss: 'SF', iat: nowS(), exp: nowS() + expOffsetS };
  const pat = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}.${b64u(crypto.randomBytes(64))}`;
  return { pat, exp: payload.exp };
}
const { pat: PAT30 } = makePat(30 * 86400);
const { pat: PAT3, exp: PAT3_EXP } = makePat(3 * 86400);
const { pat: PAT_EXPIRED } = makePat(-3600);
const { pat: PAT_WRONG } = makePat(30 * 86400);
const PAT_OPAQUE = `sfpat_${crypto.randomBytes(24).toString('hex')}`;
let ROT_OLD = makePat(30 * 86400).pat;
let ROT_NEW = makePat(30 * 86400).pat;
while (ROT_NEW.slice(-4) === ROT_OLD.slice(-4)) ROT_NEW = makePat(30 * 86400).pat;
const PASSPHRASE = `kp-pass-${crypto.randomBytes(8).toString('hex')}`;

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sg-cortex-'));
const KEY_FILE = path.join(TMP, 'rsa_key.p8');
const KEY_ENC_FILE = path.join(TMP, 'rsa_key_enc.p8');
const PAT_FILE = path.join(TMP, 'pat');           // the gateway's ${file:…} secret
const ACCEPTED_FILE = path.join(TMP, 'accepted'); // the mock's --snowflake-token-file

let mockA;      // requires PAT30
let mockOpen;   // accepts any token
let mockOpaque; // requires PAT_OPAQUE
let mockRot;    // requires ROT_NEW (flag) or the content of ACCEPTED_FILE (ROT_OLD at first)
let proxy;      // records request headers, forwards to mockOpen
const captured = []; // {url, headers} seen by the proxy

let gw;         // PAT30 config, models incl. an "api":"openai" one, fast retries
let gwWrong;    // PAT_WRONG from the environment against mockA
let gwKey;      // key pair, unencrypted PKCS#8
let gwKeyEnc;   // key pair, encrypted PKCS#8 (des3) + passphrase from ${ENV}, account locator
let gwSoon;     // PAT expiring in 3 days
let gwExpired;  // expired PAT
let gwOpaque;   // opaque PAT
let gwAdmin;    // role ACCOUNTADMIN
let gwRot;      // pat from ${file:PAT_FILE}
let gwBoth;     // lambda + cortex from the environment
const gateways = () => [gw, gwWrong, gwKey, gwKeyEnc, gwSoon, gwExpired, gwOpaque, gwAdmin, gwRot, gwBoth];

// Every response body seen by a client, checked for secrets at the end.
const bodies = [];
const record = (s) => { bodies.push(typeof s === 'string' ? s : JSON.stringify(s)); return s; };
const recordErr = (e) => {
  bodies.push(String(e && e.message));
  if (e && e.error) bodies.push(JSON.stringify(e.error));
  return e;
};

const sdk = (g) => new OpenAI({ baseURL: `${g.url}/v1`, apiKey: 'client-key', maxRetries: 0, timeout: 20000 });
let failKeyCounter = 100000 + Math.floor(Math.random() * 800000);
const uniqueKey = () => ++failKeyCounter;

function cortexProvider(extra) {
  return { account: ACCOUNT, user: USER, ...extra };
}

function startProxy(target) {
  const srv = http.createServer((req, res) => {
    captured.push({ url: req.url, headers: { ...req.headers } });
    const headers = { ...req.headers };
    const up = http.request({ host: '127.0.0.1', port: target.port, path: req.url, method: req.method, headers }, (ur) => {
      const h = { ...ur.headers };
      delete h.connection; delete h['transfer-encoding']; delete h['keep-alive'];
      res.writeHead(ur.statusCode, h);
      ur.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => {
    srv.url = `http://127.0.0.1:${srv.address().port}`;
    resolve(srv);
  }));
}

before(async () => {
  const g1 = await run('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', KEY_FILE]);
  assert.equal(g1.code, 0, g1.stderr);
  const g2 = await run('openssl', ['pkcs8', '-topk8', '-v2', 'des3', '-in', KEY_FILE, '-out', KEY_ENC_FILE,
    '-passout', `pass:${PASSPHRASE}`]);
  assert.equal(g2.code, 0, g2.stderr);
  fs.writeFileSync(PAT_FILE, `${ROT_OLD}\n`);
  fs.writeFileSync(ACCEPTED_FILE, `${ROT_OLD}\n`);

  [mockA, mockOpen, mockOpaque, mockRot] = await Promise.all([
    startMock(['--snowflake-token', PAT30]),
    startMock(),
    startMock(['--snowflake-token', PAT_OPAQUE]),
    startMock(['--snowflake-token', ROT_NEW, '--snowflake-token-file', ACCEPTED_FILE]),
  ]);
  proxy = await startProxy(mockOpen);
  const noLambda = { LAMBDA_BASE_URL: '', LAMBDA_API_KEY: '' };
  [gw, gwWrong, gwKey, gwKeyEnc, gwSoon, gwExpired, gwOpaque, gwAdmin, gwRot, gwBoth] = await Promise.all([
    startGateway({
      env: noLambda,
      config: {
        upstream: { max_retries: 2, retry_base_ms: 20 },
        providers: {
          cortex: cortexProvider({
            role: 'CORTEX_APP', pat: PAT30, base_url: mockA.url,
            models: [
              { id: 'llama3.1-70b', aliases: ['cx-big'] },
              { id: 'claude-sonnet-4-5' },
              { id: 'llama3.1-70b-oa', upstream_id: 'llama3.1-70b', api: 'openai' },
            ],
          }),
        },
      },
    }),
    startGateway({
      env: {
        ...noLambda, SNOWFLAKE_ACCOUNT: ACCOUNT, SNOWFLAKE_USER: USER, SNOWFLAKE_PAT: PAT_WRONG,
        SNOWFLAKE_BASE_URL: mockA.url,
      },
    }),
    startGateway({
      env: noLambda,
      config: { providers: { cortex: cortexProvider({ private_key_path: KEY_FILE, base_url: proxy.url }) } },
    }),
    startGateway({
      env: { ...noLambda, SG_TEST_KEY_PASS: PASSPHRASE },
      config: {
        providers: {
          cortex: {
            account: 'xy12345.us-east-1', user: USER, private_key_path: KEY_ENC_FILE,
            private_key_passphrase: '${SG_TEST_KEY_PASS}', base_url: proxy.url,
          },
        },
      },
    }),
    startGateway({ env: noLambda, config: { providers: { cortex: cortexProvider({ pat: PAT3, base_url: mockOpen.url }) } } }),
    startGateway({ env: noLambda, config: { providers: { cortex: cortexProvider({ pat: PAT_EXPIRED, base_url: mockOpen.url }) } } }),
    startGateway({ env: noLambda, config: { providers: { cortex: cortexProvider({ pat: PAT_OPAQUE, base_url: mockOpaque.url }) } } }),
    startGateway({
      env: noLambda,
      config: { providers: { cortex: cortexProvider({ role: 'ACCOUNTADMIN', pat: PAT30, base_url: mockA.url }) } },
    }),
    startGateway({
      env: noLambda,
      config: {
        upstream: { retry_base_ms: 20 },
        providers: { cortex: cortexProvider({ pat: '${file:' + PAT_FILE + '}', base_url: mockRot.url }) },
      },
    }),
    startGateway({
      mock: mockA,
      env: {
        LAMBDA_API_KEY: '', SNOWFLAKE_ACCOUNT: ACCOUNT, SNOWFLAKE_USER: USER, SNOWFLAKE_PAT: PAT30, SNOWFLAKE_BASE_URL: mockA.url,
      },
    }),
  ]);
});

after(async () => {
  for (const p of [...gateways(), mockA, mockOpen, mockOpaque, mockRot]) if (p) await p.stopClean();
  if (proxy) await new Promise((r) => { proxy.closeAllConnections?.(); proxy.close(r); });
  fs.rmSync(TMP, { recursive: true, force: true });
});

// ---- helpers ---------------------------------------------------------------------------

function assertOpenAIErrorBody(j) {
  assert.equal(typeof j.error, 'object', `error object in ${JSON.stringify(j)}`);
  assert.equal(typeof j.error.message, 'string');
  assert.ok(j.error.message.length > 0);
  assert.equal(typeof j.error.type, 'string');
  assert.ok(j.error.type.length > 0);
  assert.ok('code' in j.error, 'error.code present');
}

async function sdkStreamChunks(client, body, opts) {
  const stream = await client.chat.completions.create({ ...body, stream: true }, opts);
  const chunks = [];
  for await (const ch of stream) chunks.push(record(ch));
  return chunks;
}

const contentOf = (chunks) => chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join('');

async function metricsText(g) {
  const r = await fetch(`${g.url}/metrics`);
  assert.equal(r.status, 200);
  return record(await r.text());
}

// The value of one sample ("name" or 'name{labels}'), or undefined.
function metric(text, sample) {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    if (sp > 0 && line.slice(0, sp) === sample) return Number(line.slice(sp + 1));
  }
  return undefined;
}

async function providers(g) {
  const r = await fetch(`${g.url}/v1/providers`);
  assert.equal(r.status, 200);
  return record(await r.json());
}

const requestLine = (g, rid) => waitFor(() => g.logLines().find((l) => l.msg === 'request' && l.request_id === rid));

async function cortexDelta(mock, fn) {
  const before = (await mockStats(mock)).cortex_requests;
  const r = await fn();
  const after = await waitFor(async () => {
    const s = await mockStats(mock);
    return s.active === 0 ? s : null;
  }, 3000);
  return { r, delta: after.cortex_requests - before };
}

function decodeJwt(t) {
  const [h, p, s] = t.split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url').toString()),
    payload: JSON.parse(Buffer.from(p, 'base64url').toString()),
    signingInput: `${h}.${p}`,
    signature: Buffer.from(s, 'base64url'),
  };
}

// ---- 1. PAT auth: non-stream, stream in all three chunk shapes -------------------------

test('PAT: non-stream via curl → chat.completion with the mock text and usage; the PAT reaches Cortex', async () => {
  await resetMockStats(mockA);
  const messages = msgs('Say hello [mock:tokens=7]');
  const r = await curl(['-X', 'POST', `${gw.url}/v1/chat/completions`, '-H', 'content-type: application/json',
    '-d', JSON.stringify({ model: MODEL, messages }), '-w', '\n%{http_code}']);
  assert.equal(r.code, 0, r.stderr);
  record(r.stdout);
  const nl = r.stdout.lastIndexOf('\n');
  assert.equal(r.stdout.slice(nl + 1), '200', r.stdout);
  const j = JSON.parse(r.stdout.slice(0, nl));
  assert.equal(j.object, 'chat.completion');
  assert.equal(j.model, MODEL);
  assert.equal(j.choices.length, 1);
  assert.equal(j.choices[0].message.role, 'assistant');
  assert.equal(j.choices[0].message.content, mockText(7));
  assert.equal(j.choices[0].finish_reason, 'stop');
  assert.equal(j.usage.prompt_tokens, mockPromptTokens(messages));
  assert.equal(j.usage.completion_tokens, 7);
  assert.equal(j.usage.total_tokens, mockPromptTokens(messages) + 7);
  const s = await mockStats(mockA);
  assert.equal(s.cortex_requests, 1);
  assert.equal(s.sf_auth_failures, 0);
  assert.equal(s.last_token_type, 'PROGRAMMATIC_ACCESS_TOKEN');
  assert.equal(s.last_sf_token_suffix, PAT30.slice(-4));
  assert.equal(s.last_model, 'llama3.1-70b');
});

test('PAT: non-stream via the SDK (model, alias and a second model); max_tokens cuts with finish_reason length', async () => {
  const client = sdk(gw);
  for (const [model, upstream] of [[MODEL, 'llama3.1-70b'], ['cx-big', 'llama3.1-70b'],
    ['cortex/claude-sonnet-4-5', 'claude-sonnet-4-5']]) {
    const messages = msgs('Tell me a story [mock:tokens=20]');
    const j = record(await client.chat.completions.create({ model, messages }));
    assert.equal(j.object, 'chat.completion');
    assert.equal(j.choices[0].message.content, mockText(20));
    assert.equal(j.choices[0].finish_reason, 'stop');
    assert.equal(j.usage.prompt_tokens, mockPromptTokens(messages));
    assert.equal(j.usage.completion_tokens, 20);
    assert.equal(j.usage.total_tokens, mockPromptTokens(messages) + 20);
    assert.equal((await mockStats(mockA)).last_model, upstream);
  }
  const j = record(await client.chat.completions.create({ model: MODEL, messages: msgs('cut [mock:tokens=9]'), max_tokens: 4 }));
  assert.equal(j.choices[0].message.content, mockText(4));
  assert.equal(j.choices[0].finish_reason, 'length');
  assert.equal(j.usage.completion_tokens, 4);
});

for (const shape of [1, 2, 3]) {
  test(`PAT: SDK stream, chunk shape ${shape}: deltas, finish_reason, one usage chunk with include_usage`, async () => {
    const client = sdk(gw);
    const messages = msgs(`Stream please [mock:shape=${shape},tokens=12]`);
    // Without include_usage: no usage anywhere.
    const plain = await sdkStreamChunks(client, { model: MODEL, messages });
    assert.equal(contentOf(plain), mockText(12));
    for (const c of plain) {
      assert.equal(c.object, 'chat.completion.chunk');
      assert.equal(c.model, MODEL);
      assert.ok(c.usage == null, `unexpected usage in ${JSON.stringify(c)}`);
    }
    assert.equal(plain[plain.length - 1].choices[0].finish_reason, 'stop');
    assert.equal(plain.filter((c) => c.choices[0]?.finish_reason).length, 1);
    assert.equal(plain[0].choices[0].delta.role, 'assistant');

    const chunks = await sdkStreamChunks(client, { model: MODEL, messages, stream_options: { include_usage: true } });
    assert.equal(contentOf(chunks), mockText(12));
    const withUsage = chunks.filter((c) => c.usage);
    assert.equal(withUsage.length, 1, JSON.stringify(chunks));
    const last = chunks[chunks.length - 1];
    assert.equal(withUsage[0], last, 'the usage chunk is the last one');
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.prompt_tokens, mockPromptTokens(messages));
    assert.equal(last.usage.completion_tokens, 12);
    assert.equal(last.usage.total_tokens, mockPromptTokens(messages) + 12);
    assert.equal(chunks[chunks.length - 2].choices[0].finish_reason, 'stop');
    assert.equal(chunks.filter((c) => c.choices[0]?.finish_reason).length, 1);
    const s = await mockStats(mockA);
    assert.equal(s.last_token_type, 'PROGRAMMATIC_ACCESS_TOKEN');
    assert.equal(s.last_sf_token_suffix, PAT30.slice(-4));
  });
}

test('PAT: raw fetch stream ends with data: [DONE] although Cortex sends none', async () => {
  for (const shape of [1, 2, 3]) {
    const r = await postChat(gw, { model: MODEL, messages: msgs(`Raw [mock:shape=${shape},tokens=5]`), stream: true });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/event-stream/);
    const text = record(await r.text());
    assert.ok(text.endsWith('data: [DONE]\n\n'), `shape ${shape} tail: ${JSON.stringify(text.slice(-80))}`);
    const data = sseData(text);
    assert.equal(data.filter((d) => d === '[DONE]').length, 1);
    const objs = data.slice(0, -1).map((d) => JSON.parse(d));
    assert.equal(contentOf(objs), mockText(5));
    assert.equal(objs[objs.length - 1].choices[0].finish_reason, 'stop');
  }
});

test('PAT: a close-delimited Cortex stream (no chunked framing) works', async () => {
  const before = (await mockStats(mockA)).close_delimited;
  const messages = msgs('Close delimited [mock:close_delimited=1,tokens=10]');
  const chunks = await sdkStreamChunks(sdk(gw), { model: MODEL, messages, stream_options: { include_usage: true } });
  assert.equal(contentOf(chunks), mockText(10));
  assert.equal(chunks[chunks.length - 1].usage.completion_tokens, 10);
  assert.equal(chunks[chunks.length - 2].choices[0].finish_reason, 'stop');
  const r = await postChat(gw, { model: MODEL, messages, stream: true });
  const text = record(await r.text());
  assert.ok(text.endsWith('data: [DONE]\n\n'), `tail: ${JSON.stringify(text.slice(-80))}`);
  assert.equal(contentOf(sseData(text).slice(0, -1).map((d) => JSON.parse(d))), mockText(10));
  assert.equal((await mockStats(mockA)).close_delimited - before, 2);
});

// ---- 2. key-pair auth ------------------------------------------------------------------

async function checkKeyPair(g, keyFile, passphrase, expectAccount) {
  captured.length = 0;
  await resetMockStats(mockOpen);
  const messages = msgs('Key pair [mock:tokens=6]');
  const j = record(await sdk(g).chat.completions.create({ model: MODEL, messages }));
  assert.equal(j.choices[0].message.content, mockText(6));
  assert.equal(j.usage.completion_tokens, 6);
  const chunks = await sdkStreamChunks(sdk(g), { model: MODEL, messages });
  assert.equal(contentOf(chunks), mockText(6));
  const s = await mockStats(mockOpen);
  assert.equal(s.cortex_requests, 2);
  assert.equal(s.last_token_type, 'KEYPAIR_JWT');

  // The JWT itself, as the proxy in front of the mock saw it.
  assert.equal(captured.length, 2);
  const h = captured[captured.length - 1].headers;
  assert.equal(h['x-snowflake-authorization-token-type'], 'KEYPAIR_JWT');
  const m = /^Bearer (\S+)$/.exec(h.authorization || '');
  assert.ok(m, `authorization header: ${h.authorization}`);
  const token = m[1];
  assert.equal(token.slice(-4), s.last_sf_token_suffix);
  const jwt = decodeJwt(token);
  assert.equal(jwt.header.alg, 'RS256');
  const priv = crypto.createPrivateKey({ key: fs.readFileSync(keyFile), passphrase });
  const spki = crypto.createPublicKey(priv).export({ type: 'spki', format: 'der' });
  const fp = crypto.createHash('sha256').update(spki).digest('base64');
  const who = `${expectAccount}.${USER.toUpperCase()}`;
  assert.equal(jwt.payload.sub, who);
  assert.equal(jwt.payload.iss, `${who}.SHA256:${fp}`);
  assert.ok(Math.abs(jwt.payload.iat - nowS()) < 120, `iat ${jwt.payload.iat}`);
  assert.ok(jwt.payload.exp > jwt.payload.iat && jwt.payload.exp - jwt.payload.iat <= 3600,
    `exp ${jwt.payload.exp} iat ${jwt.payload.iat}`);
  assert.ok(crypto.verify('RSA-SHA256', Buffer.from(jwt.signingInput), crypto.createPublicKey(priv), jwt.signature),
    'JWT signature verifies with the public key');
  const p = (await providers(g)).providers.find((x) => x.name === 'cortex');
  assert.equal(p.auth, 'keypair');
  return token;
}

const keypairTokens = [];

test('key pair: private_key_path → KEYPAIR_JWT, RS256 with the documented claims, requests succeed', async () => {
  keypairTokens.push(await checkKeyPair(gwKey, KEY_FILE, undefined, ACCOUNT.toUpperCase()));
});

test('key pair: encrypted PKCS#8 (des3) + passphrase from ${ENV}; account locator cut at the first dot', async () => {
  assert.match(fs.readFileSync(KEY_ENC_FILE, 'utf8'), /BEGIN ENCRYPTED PRIVATE KEY/);
  keypairTokens.push(await checkKeyPair(gwKeyEnc, KEY_ENC_FILE, PASSPHRASE, 'XY12345'));
});

// ---- 3. tools, Guard, mid-stream errors ------------------------------------------------

const TOOLS = [{
  type: 'function',
  function: {
    name: 'lookup_weather',
    description: 'Current weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string' } }, required: ['city'] },
  },
}];

for (const shape of [1, 2, 3]) {
  test(`tools (shape ${shape}): SDK stream yields tool_calls deltas that join into valid JSON; finish_reason tool_calls`, async () => {
    const chunks = await sdkStreamChunks(sdk(gw), {
      model: MODEL, messages: msgs(`Weather in Paris? [mock:tool=1,tokens=2,shape=${shape}]`), tools: TOOLS,
    });
    assert.equal(contentOf(chunks), mockText(2));
    const tcs = chunks.flatMap((c) => c.choices?.[0]?.delta?.tool_calls ?? []);
    assert.ok(tcs.length >= 2, JSON.stringify(chunks));
    assert.equal(tcs[0].index, 0);
    assert.equal(tcs[0].id, 'toolu_1');
    assert.equal(tcs[0].type, 'function');
    assert.equal(tcs[0].function.name, 'lookup_weather');
    for (const t of tcs) assert.equal(t.index, 0);
    const frags = tcs.map((t) => t.function?.arguments ?? '').filter(Boolean);
    assert.ok(frags.length >= 2, `argument fragments: ${JSON.stringify(frags)}`);
    assert.deepEqual(JSON.parse(frags.join('')), { city: 'Paris', unit: 'celsius' });
    const finishes = chunks.map((c) => c.choices?.[0]?.finish_reason).filter(Boolean);
    assert.deepEqual(finishes, ['tool_calls']);
    assert.equal(chunks[chunks.length - 1].choices[0].finish_reason, 'tool_calls');
  });
}

test('tools: non-stream gives message.tool_calls and finish_reason tool_calls', async () => {
  const j = record(await sdk(gw).chat.completions.create({
    model: MODEL, messages: msgs('Weather? [mock:tool=1,tokens=0]'), tools: TOOLS, tool_choice: 'auto',
  }));
  const ch = j.choices[0];
  assert.equal(ch.finish_reason, 'tool_calls');
  assert.equal(ch.message.tool_calls.length, 1);
  const tc = ch.message.tool_calls[0];
  assert.equal(tc.id, 'toolu_1');
  assert.equal(tc.type, 'function');
  assert.equal(tc.function.name, 'lookup_weather');
  assert.deepEqual(JSON.parse(tc.function.arguments), { city: 'Paris', unit: 'celsius' });
});

test('Cortex Guard: prohibited=1 → finish_reason content_filter (stream in every shape, and non-stream)', async () => {
  for (const shape of [1, 2, 3]) {
    const chunks = await sdkStreamChunks(sdk(gw), { model: MODEL, messages: msgs(`Bad [mock:prohibited=1,tokens=3,shape=${shape}]`) });
    assert.equal(contentOf(chunks), mockText(3));
    const finishes = chunks.map((c) => c.choices?.[0]?.finish_reason).filter(Boolean);
    assert.deepEqual(finishes, ['content_filter'], `shape ${shape}`);
  }
  const j = record(await sdk(gw).chat.completions.create({ model: MODEL, messages: msgs('Bad [mock:prohibited=1,tokens=3]') }));
  assert.equal(j.choices[0].finish_reason, 'content_filter');
});

test('mid-stream error: the SDK throws after 2 deltas; raw SSE has an error event and no [DONE]', async () => {
  const body = { model: MODEL, messages: msgs('Oops [mock:tokens=10,midstream_error=2]') };
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
  assert.deepEqual(deltas, [WORDS[0] + ' ', WORDS[1] + ' ']);

  const r = await postChat(gw, { ...body, stream: true });
  assert.equal(r.status, 200);
  const text = record(await r.text());
  const data = sseData(text);
  assert.ok(!data.includes('[DONE]'), `no [DONE]: ${text}`);
  const last = JSON.parse(data[data.length - 1]);
  assertOpenAIErrorBody(last);
  assert.match(last.error.message, /mid-stream error/);
  assert.equal(contentOf(data.slice(0, -1).map((d) => JSON.parse(d))), mockText(2));
});

// ---- 4. translation errors -------------------------------------------------------------

test('translation: an image content part → 400 naming it, nothing sent to Cortex', async () => {
  const { r, delta } = await cortexDelta(mockA, () => postChat(gw, {
    model: MODEL,
    messages: [{ role: 'user', content: [{ type: 'text', text: 'What is this?' },
      { type: 'image_url', image_url: { url: 'https://example.com/cat.png' } }] }],
  }));
  assert.equal(r.status, 400);
  const j = record(await r.json());
  assertOpenAIErrorBody(j);
  assert.equal(j.error.type, 'invalid_request_error');
  assert.match(j.error.message, /image_url/);
  assert.equal(delta, 0);
});

test('translation: text-only content parts are accepted', async () => {
  const j = record(await sdk(gw).chat.completions.create({
    model: MODEL, messages: [{ role: 'user', content: [{ type: 'text', text: 'Hello there' }, { type: 'text', text: '[mock:tokens=3]' }] }],
  }));
  assert.equal(j.choices[0].message.content, mockText(3));
});

test('translation: response_format json_object → 400; json_schema passes', async () => {
  const { r, delta } = await cortexDelta(mockA, () => postChat(gw, {
    model: MODEL, messages: msgs('JSON please'), response_format: { type: 'json_object' },
  }));
  assert.equal(r.status, 400);
  const j = record(await r.json());
  assertOpenAIErrorBody(j);
  assert.match(j.error.message, /json_object/);
  assert.equal(delta, 0);

  const ok = record(await sdk(gw).chat.completions.create({
    model: MODEL,
    messages: msgs('JSON please [mock:tokens=4]'),
    response_format: {
      type: 'json_schema',
      json_schema: { name: 'answer', schema: { type: 'object', properties: { a: { type: 'string' } } } },
    },
  }));
  assert.equal(ok.choices[0].message.content, mockText(4));
});

// ---- 5. error mapping ------------------------------------------------------------------

test('errors: a rejected PAT → 401 authentication_error, without the PAT', async () => {
  const before = (await mockStats(mockA)).sf_auth_failures;
  for (const stream of [false, true]) {
    const r = await postChat(gwWrong, { model: MODEL, messages: msgs('hi'), stream });
    assert.equal(r.status, 401, `stream=${stream}`);
    const text = record(await r.text());
    const j = JSON.parse(text);
    assertOpenAIErrorBody(j);
    assert.equal(j.error.type, 'authentication_error');
    for (const secret of [PAT_WRONG, PAT30, PAT_WRONG.split('.')[2]]) assert.ok(!text.includes(secret), 'PAT in body');
  }
  assert.equal((await mockStats(mockA)).sf_auth_failures - before, 2);
});

test('errors: Cortex 403 / 402 / 400 → the same status with an OpenAI error body', async () => {
  const expect = { 403: 'permission_error', 402: null, 400: 'invalid_request_error', 404: 'not_found_error' };
  for (const [status, type] of Object.entries(expect)) {
    for (const stream of [false, true]) {
      const r = await postChat(gw, { model: MODEL, messages: msgs(`fail [mock:status=${status}]`), stream });
      assert.equal(r.status, Number(status), `status ${status} stream=${stream}`);
      const text = record(await r.text());
      const j = JSON.parse(text);
      assertOpenAIErrorBody(j);
      if (type) assert.equal(j.error.type, type);
      assert.ok(!text.includes(PAT30) && !text.includes(PAT30.split('.')[2]), 'PAT in body');
    }
  }
  // The SDK maps them to its error classes.
  await assert.rejects(sdk(gw).chat.completions.create({ model: MODEL, messages: msgs('x [mock:status=403]') }),
    (e) => recordErr(e) instanceof OpenAI.PermissionDeniedError);
});

// ---- 6. retries ------------------------------------------------------------------------

test('retries: 429 once → 200 after 2 attempts; 503 twice → 200 after 3; persistent 429 → 429 after 3; none mid-stream', async () => {
  const m0 = metric(await metricsText(gw), 'sophia_upstream_retries_total');

  // 429 once, non-stream.
  let rid = 'cx-retry-429-once';
  let k = uniqueKey();
  let { r, delta } = await cortexDelta(mockA, () => postChat(gw,
    { model: MODEL, messages: msgs(`retry [mock:status=429,fail_times=1,fail_key=${k},tokens=4]`) }, { 'x-request-id': rid }));
  assert.equal(r.status, 200);
  assert.equal(record(await r.json()).choices[0].message.content, mockText(4));
  assert.equal(delta, 2);
  let line = await requestLine(gw, rid);
  assert.ok(line, 'request log line');
  assert.equal(line.attempts, 2);
  assert.equal(line.status, 200);
  assert.equal(line.outcome, 'ok');
  const retries = gw.logLines().filter((l) => l.msg === 'upstream retry' && l.request_id === rid);
  assert.equal(retries.length, 1);
  assert.equal(retries[0].level, 'warn');
  assert.equal(retries[0].upstream_status, 429);
  assert.equal(retries[0].attempt, 2);

  // 503 twice, streamed through the SDK.
  rid = 'cx-retry-503-twice';
  k = uniqueKey();
  ({ r, delta } = await cortexDelta(mockA, () => sdkStreamChunks(sdk(gw), {
    model: MODEL, messages: msgs(`retry [mock:status=503,fail_times=2,fail_key=${k},tokens=5]`),
  }, { headers: { 'x-request-id': rid } })));
  assert.equal(contentOf(r), mockText(5));
  assert.equal(delta, 3);
  line = await requestLine(gw, rid);
  assert.equal(line.attempts, 3);
  assert.equal(line.status, 200);
  assert.equal(gw.logLines().filter((l) => l.msg === 'upstream retry' && l.request_id === rid).length, 2);

  // Persistent 429: max_retries (2) + 1 attempts, then the 429 goes to the client.
  rid = 'cx-retry-429-always';
  k = uniqueKey();
  ({ r, delta } = await cortexDelta(mockA, () => postChat(gw,
    { model: MODEL, messages: msgs(`retry [mock:status=429,fail_times=99,fail_key=${k}]`) }, { 'x-request-id': rid })));
  assert.equal(r.status, 429);
  const j = record(await r.json());
  assertOpenAIErrorBody(j);
  assert.equal(j.error.type, 'rate_limit_error');
  assert.equal(delta, 3);
  line = await requestLine(gw, rid);
  assert.equal(line.attempts, 3);
  assert.equal(line.status, 429);

  // Output already started: no retry.
  rid = 'cx-no-retry-midstream';
  k = uniqueKey();
  ({ r, delta } = await cortexDelta(mockA, () => postChat(gw,
    { model: MODEL, messages: msgs(`mid [mock:midstream_error=2,tokens=6,fail_times=1,fail_key=${k}]`), stream: true },
    { 'x-request-id': rid })));
  const text = record(await r.text());
  assert.ok(!text.includes('[DONE]'));
  assert.equal(delta, 1);
  line = await requestLine(gw, rid);
  assert.ok(line);
  assert.ok(!('attempts' in line) || line.attempts === 1, JSON.stringify(line));
  assert.equal(gw.logLines().filter((l) => l.msg === 'upstream retry' && l.request_id === rid).length, 0);

  const m1 = metric(await metricsText(gw), 'sophia_upstream_retries_total');
  assert.ok(m1 > 0);
  assert.equal(m1 - m0, 1 + 2 + 2);
});

// ---- 7. the OpenAI-compatible Cortex endpoint ------------------------------------------

test('"api":"openai" model: max_tokens is accepted (sent as max_completion_tokens), non-stream and stream', async () => {
  await resetMockStats(mockA);
  const client = sdk(gw);
  const messages = msgs('OpenAI style [mock:tokens=6]');
  const j = record(await client.chat.completions.create({ model: OA_MODEL, messages, max_tokens: 50 }));
  assert.equal(j.object, 'chat.completion');
  assert.equal(j.model, OA_MODEL);
  assert.equal(j.choices[0].message.content, mockText(6));
  assert.equal(j.usage.completion_tokens, 6);
  assert.equal(j.usage.prompt_tokens, mockPromptTokens(messages));
  // The limit is forwarded, not dropped.
  const cut = record(await client.chat.completions.create({ model: OA_MODEL, messages: msgs('cut [mock:tokens=9]'), max_tokens: 3 }));
  assert.equal(cut.choices[0].message.content, mockText(3));
  assert.equal(cut.choices[0].finish_reason, 'length');

  const chunks = await sdkStreamChunks(client, { model: OA_MODEL, messages, max_tokens: 50, stream_options: { include_usage: true } });
  assert.equal(contentOf(chunks), mockText(6));
  const withUsage = chunks.filter((c) => c.usage);
  assert.equal(withUsage.length, 1);
  assert.deepEqual(chunks[chunks.length - 1].choices, []);
  assert.equal(chunks[chunks.length - 1].usage.completion_tokens, 6);
  assert.equal(chunks[chunks.length - 2].choices[0].finish_reason, 'stop');
  const plain = await sdkStreamChunks(client, { model: OA_MODEL, messages, max_tokens: 50 });
  assert.equal(contentOf(plain), mockText(6));
  assert.ok(plain.every((c) => c.usage == null), 'no usage chunk unless asked for');

  const s = await mockStats(mockA);
  assert.equal(s.cortex_requests, 4);
  assert.equal(s.errors_injected, 0);
  assert.equal(s.last_model, 'llama3.1-70b');
  assert.equal(s.last_token_type, 'PROGRAMMATIC_ACCESS_TOKEN');
});

// ---- 8. PAT lifecycle ------------------------------------------------------------------

test('PAT expiring in 3 days: a warning at start (no secret), /v1/providers and /metrics report ≈3 days', async () => {
  const warns = gwSoon.logLines().filter((l) => l.level === 'warn' && /programmatic access token expires/.test(l.msg));
  assert.equal(warns.length, 1, gwSoon.err);
  assert.match(warns[0].msg, /rotate/);
  for (const secret of [PAT3, ...PAT3.split('.')]) assert.ok(!JSON.stringify(warns[0]).includes(secret));
  const p = (await providers(gwSoon)).providers.find((x) => x.name === 'cortex');
  assert.equal(p.auth, 'pat');
  assert.equal(p.token_expires_at, PAT3_EXP);
  assert.ok(Math.abs(p.token_days_to_expiry - 3) < 0.01, `days ${p.token_days_to_expiry}`);
  const v = metric(await metricsText(gwSoon), 'sophia_provider_token_expiry_days{provider="cortex",auth="pat"}');
  assert.ok(Math.abs(v - 3) < 0.01, `metric ${v}`);
  // Still usable.
  const j = record(await sdk(gwSoon).chat.completions.create({ model: MODEL, messages: msgs('hi [mock:tokens=2]') }));
  assert.equal(j.choices[0].message.content, mockText(2));

  // A 30-day PAT (pat_warn_days 7): no expiry warning, ≈30 days.
  assert.equal(gw.logLines().filter((l) => l.level === 'warn' && /expire/.test(l.msg)).length, 0);
  const v30 = metric(await metricsText(gw), 'sophia_provider_token_expiry_days{provider="cortex",auth="pat"}');
  assert.ok(Math.abs(v30 - 30) < 0.01, `metric ${v30}`);
});

test('expired PAT: logged at start; chat requests get 503 snowflake_token_expired saying how to rotate', async () => {
  assert.ok(gwExpired.logLines().some((l) => (l.level === 'error' || l.level === 'warn') && /expired/.test(l.msg)),
    gwExpired.err);
  const { r: results, delta } = await cortexDelta(mockOpen, async () => {
    const out = [];
    for (const stream of [false, true]) {
      const r = await postChat(gwExpired, { model: MODEL, messages: msgs('hi'), stream });
      out.push({ status: r.status, text: record(await r.text()) });
    }
    return out;
  });
  for (const { status, text } of results) {
    assert.equal(status, 503);
    const j = JSON.parse(text);
    assertOpenAIErrorBody(j);
    assert.equal(j.error.code, 'snowflake_token_expired');
    assert.match(j.error.message, /rotate/i);
    assert.match(j.error.message, /SIGHUP/);
    assert.ok(!text.includes(PAT_EXPIRED.split('.')[2]));
  }
  assert.equal(delta, 0, 'an expired PAT is not sent to Snowflake');
  const p = (await providers(gwExpired)).providers.find((x) => x.name === 'cortex');
  assert.ok(p.token_days_to_expiry < 0);
});

test('opaque PAT: accepted with exactly one warning; expiry unknown', async () => {
  const warns = gwOpaque.logLines().filter((l) => l.level === 'warn');
  assert.equal(warns.length, 1, gwOpaque.err);
  assert.match(warns[0].msg, /not JWT-shaped|expiry is unknown/);
  assert.ok(!JSON.stringify(warns[0]).includes(PAT_OPAQUE));
  await resetMockStats(mockOpaque);
  const j = record(await sdk(gwOpaque).chat.completions.create({ model: MODEL, messages: msgs('hi [mock:tokens=3]') }));
  assert.equal(j.choices[0].message.content, mockText(3));
  const s = await mockStats(mockOpaque);
  assert.equal(s.sf_auth_failures, 0);
  assert.equal(s.last_token_type, 'PROGRAMMATIC_ACCESS_TOKEN');
  assert.equal(s.last_sf_token_suffix, PAT_OPAQUE.slice(-4));
  const p = (await providers(gwOpaque)).providers.find((x) => x.name === 'cortex');
  assert.equal(p.auth, 'pat');
  assert.equal(p.token_expires_at, null);
  assert.equal(metric(await metricsText(gwOpaque), 'sophia_provider_token_expiry_days{provider="cortex",auth="pat"}'), undefined);
});

test('role ACCOUNTADMIN: a warning at start; a least-privilege role gets none', async () => {
  const warns = gwAdmin.logLines().filter((l) => l.level === 'warn' && /ACCOUNTADMIN/.test(l.msg));
  assert.equal(warns.length, 1, gwAdmin.err);
  assert.equal(gw.logLines().filter((l) => l.level === 'warn' && /role/.test(l.msg)).length, 0);
  const j = record(await sdk(gwAdmin).chat.completions.create({ model: MODEL, messages: msgs('hi [mock:tokens=2]') }));
  assert.equal(j.choices[0].message.content, mockText(2));
});

// ---- 9. rotation without restart, under load -------------------------------------------

test('PAT rotation with SIGHUP under load: no stream dropped, no request failed, new token used after', async () => {
  await resetMockStats(mockRot);
  // Before: the old token is in use.
  const pre = record(await sdk(gwRot).chat.completions.create({ model: MODEL, messages: msgs('pre [mock:tokens=2]') }));
  assert.equal(pre.choices[0].message.content, mockText(2));
  assert.equal((await mockStats(mockRot)).last_sf_token_suffix, ROT_OLD.slice(-4));

  const N_LONG = 50;
  const longs = Array.from({ length: N_LONG }, async (_, i) => {
    try {
      const r = await postChat(gwRot, { model: MODEL, messages: msgs(`long ${i} [mock:itl_ms=20,tokens=100]`), stream: true });
      const text = await r.text();
      return { status: r.status, text };
    } catch (e) {
      return { status: 0, text: String(e) };
    }
  });

  let stop = false;
  let switchedAt = Infinity;
  const shortResults = [];
  const worker = async (w) => {
    let i = 0;
    while (!stop) {
      const t0 = Date.now();
      try {
        const r = await postChat(gwRot, { model: MODEL, messages: msgs(`short ${w}-${i++} [mock:tokens=3]`) });
        const j = await r.json();
        shortResults.push({ t0, ok: r.status === 200 && j.choices?.[0]?.message?.content === mockText(3), status: r.status, j });
      } catch (e) {
        shortResults.push({ t0, ok: false, status: 0, j: String(e) });
      }
      await sleep(5);
    }
  };
  const workers = Array.from({ length: 4 }, (_, w) => worker(w));

  const started = await waitFor(async () => (await mockStats(mockRot)).streams_started >= N_LONG, 5000);
  assert.ok(started, 'long streams started');
  await sleep(200);

  // Rotate: the new secret in the file the config reads, both tokens valid at Snowflake
  // (the mock accepts ROT_NEW by flag and ROT_OLD from its file), then SIGHUP.
  fs.writeFileSync(PAT_FILE, `${ROT_NEW}\n`);
  gwRot.child.kill('SIGHUP');
  const reloaded = await waitFor(() => gwRot.logLines().find((l) => l.msg === 'configuration reloaded'), 5000);
  assert.ok(reloaded, 'reload log line');
  assert.equal(reloaded.generation, 2);
  assert.ok(reloaded.requests_on_previous >= N_LONG, `requests on the old generation: ${reloaded.requests_on_previous}`);
  await sleep(100);
  // The old token is revoked: only the new one passes from now on.
  fs.writeFileSync(ACCEPTED_FILE, `${ROT_NEW}\n`);
  switchedAt = Date.now();

  const longResults = await Promise.all(longs);
  await sleep(300);
  stop = true;
  await Promise.all(workers);

  for (const [i, { status, text }] of longResults.entries()) {
    assert.equal(status, 200, `long stream ${i}: ${text.slice(0, 300)}`);
    assert.ok(text.endsWith('data: [DONE]\n\n'), `long stream ${i} tail: ${JSON.stringify(text.slice(-200))}`);
    assert.equal(contentOf(sseData(text).slice(0, -1).map((d) => JSON.parse(d))), mockText(100));
  }
  const failed = shortResults.filter((r) => !r.ok);
  assert.deepEqual(failed, [], `failed short requests: ${JSON.stringify(failed.slice(0, 3))}`);
  assert.ok(shortResults.length >= 20, `short requests: ${shortResults.length}`);
  assert.ok(shortResults.filter((r) => r.t0 > switchedAt).length >= 4, 'short requests after the old token was revoked');

  const post = record(await sdk(gwRot).chat.completions.create({ model: MODEL, messages: msgs('post [mock:tokens=2]') }));
  assert.equal(post.choices[0].message.content, mockText(2));
  const s = await mockStats(mockRot);
  assert.equal(s.sf_auth_failures, 0);
  assert.equal(s.last_sf_token_suffix, ROT_NEW.slice(-4));
  assert.equal(s.streams_aborted, 0);
  assert.ok(s.streams_completed >= N_LONG);
  const m = await metricsText(gwRot);
  assert.equal(metric(m, 'sophia_config_generation'), 2);
  assert.equal(metric(m, 'sophia_config_reloads_total{result="ok"}'), 1);
  assert.equal(metric(m, 'sophia_config_reloads_total{result="failed"}'), 0);
  assert.equal((await providers(gwRot)).generation, 2);
});

test('a failed reload keeps serving on the old generation', async () => {
  const args = gwRot.child.spawnargs;
  const cfgPath = args[args.indexOf('--config') + 1];
  const good = fs.readFileSync(cfgPath, 'utf8');
  fs.writeFileSync(cfgPath, '{"providers": {"cortex": {"account": ');
  try {
    gwRot.child.kill('SIGHUP');
    const failedLine = await waitFor(() => gwRot.logLines().find((l) => l.msg === 'reload failed' ||
      /reload failed/.test(l.msg || '')), 5000);
    assert.ok(failedLine, 'reload failure logged');
    const m = await metricsText(gwRot);
    assert.equal(metric(m, 'sophia_config_reloads_total{result="failed"}'), 1);
    assert.equal(metric(m, 'sophia_config_reloads_total{result="ok"}'), 1);
    assert.equal(metric(m, 'sophia_config_generation'), 2);
    const j = record(await sdk(gwRot).chat.completions.create({ model: MODEL, messages: msgs('still [mock:tokens=3]') }));
    assert.equal(j.choices[0].message.content, mockText(3));
    const chunks = await sdkStreamChunks(sdk(gwRot), { model: MODEL, messages: msgs('still [mock:tokens=3]') });
    assert.equal(contentOf(chunks), mockText(3));
    assert.equal((await mockStats(mockRot)).last_sf_token_suffix, ROT_NEW.slice(-4));
  } finally {
    fs.writeFileSync(cfgPath, good);
  }
});

// ---- 10. lambda and cortex side by side ------------------------------------------------

test('lambda and cortex in one gateway: both answer through the SDK; /v1/models lists both', async () => {
  const client = sdk(gwBoth);
  await resetMockStats(mockA);
  const a = record(await client.chat.completions.create({ model: 'lambda/llama3.1-8b-instruct', messages: msgs('lambda [mock:tokens=5]') }));
  assert.equal(a.choices[0].message.content, mockText(5));
  let s = await mockStats(mockA);
  assert.equal(s.requests, 1);
  assert.equal(s.cortex_requests, 0);
  assert.equal(s.last_model, 'llama3.1-8b-instruct');

  const b = record(await client.chat.completions.create({ model: MODEL, messages: msgs('cortex [mock:tokens=6]') }));
  assert.equal(b.choices[0].message.content, mockText(6));
  assert.equal(b.model, MODEL);
  s = await mockStats(mockA);
  assert.equal(s.cortex_requests, 1);
  assert.equal(s.last_model, 'llama3.1-70b');
  assert.equal(s.last_token_type, 'PROGRAMMATIC_ACCESS_TOKEN');

  const [ca, cb] = await Promise.all([
    sdkStreamChunks(client, { model: 'fast', messages: msgs('lambda [mock:tokens=4]') }),
    sdkStreamChunks(client, { model: 'cortex-fast', messages: msgs('cortex [mock:tokens=4]') }),
  ]);
  assert.equal(contentOf(ca), mockText(4));
  assert.equal(contentOf(cb), mockText(4));
  assert.equal(cb[0].model, 'cortex/llama3.1-8b');

  const ids = [];
  for await (const m of client.models.list()) ids.push(record(m).id);
  for (const id of ['lambda/llama3.1-8b-instruct', 'cortex/llama3.1-70b', 'cortex/claude-sonnet-4-5', 'fast', 'cortex-fast']) {
    assert.ok(ids.includes(id), `${id} in ${ids.join(', ')}`);
  }
  const ps = (await providers(gwBoth)).providers.map((p) => [p.name, p.kind, p.auth]);
  assert.deepEqual(ps.sort(), [['cortex', 'cortex', 'pat'], ['lambda', 'openai', 'none']]);
});

// ---- 11. secrets -----------------------------------------------------------------------

test('no PAT, passphrase, key-pair JWT or private key line in any log or response body', async () => {
  const pemLines = [KEY_FILE, KEY_ENC_FILE].flatMap((f) => fs.readFileSync(f, 'utf8').split('\n'))
    .map((l) => l.trim()).filter((l) => l.length >= 16 && !l.startsWith('-----'));
  assert.ok(pemLines.length > 20);
  const pats = [PAT30, PAT3, PAT_EXPIRED, PAT_WRONG, ROT_OLD, ROT_NEW];
  const secrets = [
    ...pats, ...pats.map((p) => p.split('.')[2]), PAT_OPAQUE, PASSPHRASE,
    ...keypairTokens, ...keypairTokens.map((t) => t.split('.')[2]), ...pemLines,
  ];
  assert.ok(keypairTokens.length === 2);
  const haystacks = [
    ...gateways().map((g, i) => [`gateway ${i} stderr`, g.err + g.out]),
    ...bodies.map((b, i) => [`body ${i}`, b]),
  ];
  assert.ok(bodies.length > 50, `bodies recorded: ${bodies.length}`);
  for (const [where, text] of haystacks) {
    for (const s of secrets) assert.ok(!text.includes(s), `secret ${s.slice(0, 8)}… found in ${where}`);
  }
  // And the gateways did log a fair amount (so the check is not vacuous).
  for (const g of gateways()) assert.ok(g.logLines().length >= 3);
});
