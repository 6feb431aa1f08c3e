// Configuration: --check-config, every problem reported with its JSON path and exit code 2,
// ${ENV} interpolation (secrets never logged), environment-only configuration.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { startMock as startMock0, startGateway as startGateway0, run, chatBody, GATEWAY_BIN } from './lib.mjs';

// Processes left running by a failed test are killed at the end.
const procs = [];
after(async () => {
  for (const p of procs) if (!p.exited) await p.stop('SIGKILL');
});
async function startMock(...a) { const p = await startMock0(...a); procs.push(p); return p; }
async function startGateway(...a) { const p = await startGateway0(...a); procs.push(p); return p; }

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sg-config-'));
let nfile = 0;
function writeConfig(text) {
  const f = path.join(dir, `c${nfile++}.json`);
  fs.writeFileSync(f, typeof text === 'string' ? text : JSON.stringify(text, null, 2));
  return f;
}

// Runs the gateway binary to completion (killed after 5 s: a gateway that starts instead of
// exiting fails the test). The provider variables of the outer environment are blanked
// (empty counts as unset) so that only what a test sets is seen.
function gateway(args, env = {}) {
  return run(GATEWAY_BIN, args, {
    timeout: 5000,
    env: { ...process.env, LAMBDA_BASE_URL: '', LAMBDA_API_KEY: '', SOPHIA_LISTEN: '', ...env },
  });
}

const VALID = `{
  // comments are allowed
  "listen": "127.0.0.1:0",
  "log_level": "warn",
  "limits": {"max_body_bytes": 2048, "high_watermark": 131072, "low_watermark": 0,
             "write_stall_timeout_ms": 1500},
  "cors": {"allowed_origins": ["https://app.example.com", "*"]},
  "upstream": {"connect_timeout_ms": 1000, "total_timeout_ms": 60000},
  "shutdown_grace_ms": 0,
  /* a second provider with its own models */
  "providers": {
    "lambda": {"base_url": "http://127.0.0.1:9/v1/", "api_key": null},
    "local": {"kind": "openai", "base_url": "\${SG_CFG_TEST_BASE}", "api_key": "literal $$ sign",
              "models": [{"id": "local/m1", "upstream_id": "m1", "aliases": ["m"], "price_in": 0.5}]}
  }
}`;

// Several independent problems; each must be reported with its JSON path.
const BAD = {
  listen: '127.0.0.1:0',
  colour: 'blue', // unknown key at the top
  limits: {
    max_body_bytes: -5, // negative
    high_watermark: 1000,
    low_watermark: 2000, // not below high_watermark
    max_conections: 10, // typo: unknown key
  },
  upstream: { idle_timeout_ms: 1.5 },
  providers: {
    lambda: {
      base_url: 'ftp://example.com/v1', // not http(s)
      api_key: '${SG_CFG_TEST_UNSET_VAR}', // unset variable
    },
  },
};
const BAD_PROBLEMS = [
  ['$.colour', /unknown key/],
  ['$.limits.max_conections', /unknown key/],
  ['$.limits.max_body_bytes', /positive integer.*-5/],
  ['$.limits.low_watermark', /less than high_watermark/],
  ['$.upstream.idle_timeout_ms', /integer/],
  ['$.providers.lambda.base_url', /http:\/\/ or https:\/\//],
  ['$.providers.lambda.api_key', /SG_CFG_TEST_UNSET_VAR is not set/],
];

function assertProblems(stderr, problems) {
  const lines = stderr.split('\n').filter((l) => l.startsWith('config error: '));
  for (const [p, re] of problems) {
    const line = lines.find((l) => l.startsWith(`config error: ${p}: `));
    assert.ok(line, `a problem reported at ${p}; stderr:\n${stderr}`);
    assert.match(line, re);
  }
  assert.equal(lines.length, problems.length, `exactly the expected problems; stderr:\n${stderr}`);
  assert.match(stderr, new RegExp(`invalid configuration \\(${problems.length} problems?\\)`));
}

test('--check-config: a valid file exits 0', async () => {
  const f = writeConfig(VALID);
  const r = await gateway(['--check-config', '--config', f], { SG_CFG_TEST_BASE: 'http://127.0.0.1:9/v1' });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /configuration OK: .*2 provider\(s\)/);
  assert.doesNotMatch(r.stderr, /config error/);
  // The same file without the variable it needs is invalid.
  const r2 = await gateway(['--check-config', '--config', f]);
  assert.equal(r2.code, 2);
  assertProblems(r2.stderr, [['$.providers.local.base_url', /SG_CFG_TEST_BASE is not set/]]);
});

test('--check-config: every problem is reported with its JSON path, exit 2', async () => {
  const r = await gateway(['--check-config', '--config', writeConfig(BAD)]);
  assert.equal(r.code, 2, r.stderr);
  assertProblems(r.stderr, BAD_PROBLEMS);
  assert.equal(r.stdout, '', 'nothing on stdout');
});

test('starting with an invalid config exits 2 with the same messages', async () => {
  const f = writeConfig(BAD);
  const check = await gateway(['--check-config', '--config', f]);
  const r = await gateway(['--listen', '127.0.0.1:0', '--config', f]);
  assert.equal(r.code, 2, `exit status; stderr: ${r.stderr}`);
  assertProblems(r.stderr, BAD_PROBLEMS);
  const errLines = (s) => s.split('\n').filter((l) => l.startsWith('config error: '));
  assert.deepEqual(errLines(r.stderr), errLines(check.stderr));
  assert.doesNotMatch(r.stderr, /listening/);
});

test('malformed JSON exits 2 naming the line and column', async () => {
  // line 3: `  "limits": {"max_body_bytes" 5}` — the 5 (column 31) is where a ':' was due.
  const f = writeConfig('{\n  // comment\n  "limits": {"max_body_bytes" 5}\n}\n');
  for (const args of [['--check-config', '--config', f], ['--listen', '127.0.0.1:0', '--config', f]]) {
    const r = await gateway(args);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /config error: \$: invalid JSON at line 3, column 31/);
  }
  const r = await gateway(['--check-config', '--config', writeConfig('{"log_level": "info",}')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /invalid JSON at line 1, column \d+/);
});

test('a missing config file exits 2', async () => {
  const f = path.join(dir, 'does-not-exist.json');
  for (const args of [['--check-config', '--config', f], ['--listen', '127.0.0.1:0', '--config', f]]) {
    const r = await gateway(args);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /config error: \$: cannot open config file .*does-not-exist\.json/);
  }
});

test('${ENV} interpolation works end to end and the key never appears in the logs', async () => {
  const key = `sk-test-${crypto.randomBytes(12).toString('hex')}`;
  const mock = await startMock(['--api-key', key]);
  const gw = await startGateway({
    config: { providers: { lambda: { base_url: '${MY_BASE}', api_key: '${MY_TEST_KEY}' } } },
    env: { MY_TEST_KEY: key, MY_BASE: `${mock.url}/v1`, LAMBDA_BASE_URL: '', LAMBDA_API_KEY: '' },
  });
  let r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', body: chatBody() });
  const j = await r.json();
  assert.equal(r.status, 200, JSON.stringify(j));
  assert.equal(j.object, 'chat.completion');
  r = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', body: chatBody({ stream: true }) });
  assert.equal(r.status, 200);
  assert.match(await r.text(), /data: \[DONE\]/);
  const st = await (await fetch(`${mock.url}/stats`)).json();
  assert.equal(st.auth_failures, 0, 'the mock accepted the interpolated key');
  assert.equal(st.last_authorization_seen, true);
  await gw.stopClean();
  await mock.stopClean();
  assert.ok(!gw.err.includes(key) && !gw.out.includes(key), 'the API key is never logged');
  assert.ok(!gw.err.includes(key.slice(8)), 'not even in part');

  // An invalid interpolated key is reported without its value.
  const bad = `${key}\nX-Injected: 1`;
  const f = writeConfig({ providers: { lambda: { base_url: 'http://127.0.0.1:9/v1', api_key: '${MY_TEST_KEY}' } } });
  const c = await gateway(['--check-config', '--config', f], { MY_TEST_KEY: bad });
  assert.equal(c.code, 2);
  assertProblems(c.stderr, [['$.providers.lambda.api_key', /control characters/]]);
  assert.ok(!c.stderr.includes(key.slice(8)), 'an invalid key is not echoed');
});

test('environment-only configuration serves what the endpoint lists, with built-in prices and aliases', async () => {
  const key = `sk-env-${crypto.randomBytes(8).toString('hex')}`;
  const mock = await startMock(['--api-key', key]);
  const gw = await startGateway({ mock, env: { LAMBDA_API_KEY: key } });
  const r = await fetch(`${gw.url}/v1/models`);
  assert.equal(r.status, 200);
  const j = await r.json();
  assert.equal(j.object, 'list');
  const ids = j.data.map((m) => m.id);
  // The mock lists these; the built-in Lambda table gives them prices, tiers and aliases.
  const listed = (await (await fetch(`${mock.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).json())
    .data.map((m) => m.id);
  assert.ok(listed.length > 3);
  for (const id of listed) assert.ok(ids.includes(`lambda/${id}`), `catalog has lambda/${id}`);
  assert.ok(!ids.includes('lambda/deepseek-v3-0324'), 'a built-in name the endpoint does not serve is not listed');
  assert.ok(ids.includes('fast') && ids.includes('smart'), 'built-in aliases of served models');
  const m8 = j.data.find((m) => m.id === 'lambda/llama3.1-8b-instruct');
  assert.equal(m8.sophia.tier, 'small');
  assert.equal(m8.sophia.price_in, 0.025);
  assert.equal(m8.sophia.discovered, true);
  assert.equal(new Set(ids).size, ids.length, 'no duplicates');
  for (const m of j.data) assert.equal(m.object, 'model');
  // The key from the environment is what the upstream receives.
  const c = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', body: chatBody({ model: 'fast' }) });
  assert.equal(c.status, 200, await c.clone().text());
  await c.json();
  assert.equal((await (await fetch(`${mock.url}/stats`)).json()).auth_failures, 0);
  await gw.stopClean();
  await mock.stopClean();
  assert.ok(!gw.err.includes(key), 'the API key is never logged');
});
