// The usage ledger end to end: one row per request in the gateway's SQLite file with the
// right fields after a graceful stop, rows committed before a kill -9 survive it, "ledger":
// null writes nothing, GET /admin/usage over known rows (exact groups and totals, bad
// parameters, a client that leaves while the query runs), budgets rebuilt from the spend at
// start, and the `usage` command (table and JSON).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  startMock as startMock0, startGateway as startGateway0, postChat, sseData, sleep, run,
  GATEWAY_BIN,
} from './lib.mjs';

// Processes left running by a failed test are killed at the end.
const procs = [];
after(async () => {
  for (const p of procs) if (!p.exited) await p.stop('SIGKILL');
});
async function startMock(...a) { const p = await startMock0(...a); procs.push(p); return p; }
// Every gateway has an admin key (GET /admin/usage needs it).
const ADMIN_KEY = 'ledger-admin-key-0123456789';
const ADMIN = { authorization: `Bearer ${ADMIN_KEY}` };
async function startGateway(opts = {}) {
  const p = await startGateway0({ ...opts, env: { SOPHIA_ADMIN_KEY: ADMIN_KEY, ...(opts.env || {}) } });
  procs.push(p);
  return p;
}

// A provider with two priced models on the mock (USD per 1M tokens).
const providers = (mock) => ({
  local: {
    kind: 'openai', base_url: `${mock.url}/v1`, api_key: null,
    models: [{ id: 'cheap', upstream_id: 'm1', price_in: 1, price_out: 2 },
      { id: 'pricey', upstream_id: 'm2', price_in: 10, price_out: 20 }],
  },
});

// Rows of a query, read with the sqlite3 command (nothing printed means no rows).
async function sql(db, query) {
  const r = await run('sqlite3', ['-json', db, query]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim() ? JSON.parse(r.stdout) : [];
}

async function chat(gw, body) {
  const r = await postChat(gw, body);
  const text = await r.text();
  return { status: r.status, id: r.headers.get('x-request-id'), text };
}

const msgs = (text) => [{ role: 'user', content: text }];

// A cost column: the model's price times the tokens.
function assertCost(got, want) {
  assert.ok(Math.abs(got - want) < 1e-12, `cost ${got}, expected ${want}`);
}

test('every request is one row with its fields, all written by a graceful stop', async () => {
  const mock = await startMock();
  const gw = await startGateway({ config: { providers: providers(mock) } });
  const a = await chat(gw, { model: 'cheap', messages: msgs('one [mock:tokens=5]') });
  const b = await chat(gw, { model: 'cheap', messages: msgs('two [mock:tokens=6]') });
  const s = await chat(gw, {
    model: 'pricey', stream: true, stream_options: { include_usage: true },
    messages: msgs('three [mock:tokens=7,ttft_ms=30]'),
  });
  const bad = await chat(gw, { model: 'no-such-model', messages: msgs('four') });
  assert.equal(a.status, 200);
  assert.equal(s.status, 200);
  assert.equal(bad.status, 404);
  // a client that leaves in the middle of a stream
  const ac = new AbortController();
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST', signal: ac.signal, headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'cheap', stream: true, messages: msgs('five [mock:tokens=200,itl_ms=20]') }),
  });
  const gone = res.headers.get('x-request-id');
  const reader = res.body.getReader();
  await reader.read();
  ac.abort();
  await sleep(300);
  await gw.stopClean();
  await mock.stopClean();

  const db = path.join(gw.dir, 'sophia.db');
  const rows = await sql(db, 'SELECT * FROM requests ORDER BY ts');
  assert.equal(rows.length, 5, JSON.stringify(rows));
  const byId = Object.fromEntries(rows.map((r) => [r.request_id, r]));
  const usageOf = (text) => JSON.parse(text).usage;

  const ra = byId[a.id];
  const ua = usageOf(a.text);
  assert.equal(ra.provider, 'local');
  assert.equal(ra.api, '/v1/chat/completions');
  assert.equal(ra.endpoint, `http://127.0.0.1:${mock.port}/v1`);
  assert.equal(ra.model, 'cheap');
  assert.equal(ra.route, 'local/cheap'); // the public name that served
  assert.equal(ra.rule, 'alias'); // "cheap" names local/cheap
  assert.ok(ra.route_reason.length > 0);
  assert.equal(ra.attempts, 1);
  assert.equal(ra.prompt_tokens, ua.prompt_tokens);
  assert.equal(ra.completion_tokens, 5);
  assertCost(ra.cost_in_usd, ua.prompt_tokens * 1 / 1e6);
  assertCost(ra.cost_out_usd, 5 * 2 / 1e6);
  assert.ok(Math.abs(ra.cost_usd - ra.cost_in_usd - ra.cost_out_usd) < 1e-12);
  // Time spent waiting on the upstream, within the request's latency.
  assert.ok(ra.upstream_ms > 0 && ra.upstream_ms <= ra.latency_ms, `upstream_ms ${ra.upstream_ms}`);
  assert.equal(ra.estimated, 0);
  assert.equal(ra.status, 200);
  assert.equal(ra.outcome, 'ok');
  assert.equal(ra.partial, 0);
  assert.equal(ra.stream, 0);
  assert.equal(ra.denied, null);
  assert.equal(ra.error, null);
  assert.equal(ra.key, null);
  assert.ok(ra.latency_ms > 0);
  assert.ok(Math.abs(ra.ts - Date.now() / 1000) < 60);
  assert.equal(byId[b.id].completion_tokens, 6);

  const rs = byId[s.id];
  const us = JSON.parse(sseData(s.text).filter((d) => d !== '[DONE]').at(-1)).usage;
  assert.equal(rs.stream, 1);
  assert.equal(rs.route, 'local/pricey');
  assert.equal(rs.prompt_tokens, us.prompt_tokens);
  assert.equal(rs.completion_tokens, 7);
  assertCost(rs.cost_usd, (us.prompt_tokens * 10 + 7 * 20) / 1e6);
  assert.ok(rs.ttft_ms >= 25 && rs.ttft_ms <= rs.latency_ms, JSON.stringify(rs));

  const rb = byId[bad.id];
  assert.equal(rb.status, 404);
  assert.equal(rb.partial, 1);
  assert.equal(rb.cost_usd, 0);
  assert.ok(rb.error.length > 0);
  assert.equal(rb.ttft_ms, null);

  const rg = byId[gone];
  assert.equal(rg.status, 499);
  assert.equal(rg.outcome, 'client_closed');
  assert.equal(rg.partial, 1);
  assert.equal(rg.stream, 1);

  const log = gw.logLines();
  assert.ok(log.some((l) => l.msg === 'ledger open' && l.path === 'sophia.db'));
  assert.ok(log.some((l) => l.msg === 'ledger closed' && l.written === 5 && l.dropped === 0));
});

test('kill -9: every request finished more than flush_ms before the kill is in the file', async () => {
  const mock = await startMock();
  const gw = await startGateway({ config: { providers: providers(mock), ledger: { flush_ms: 200 } } });
  const ids = [];
  for (let wave = 0; wave < 4; wave++) {
    const rs = await Promise.all(Array.from({ length: 10 }, (_, i) =>
      chat(gw, { model: 'cheap', stream: i % 2 === 1, messages: msgs(`n${i} [mock:tokens=3]`) })));
    for (const r of rs) {
      assert.equal(r.status, 200);
      ids.push(r.id);
    }
  }
  await sleep(500);
  assert.deepEqual(await gw.stop('SIGKILL'), { code: null, signal: 'SIGKILL' });
  await mock.stopClean();
  const rows = await sql(path.join(gw.dir, 'sophia.db'), 'SELECT request_id FROM requests');
  const have = new Set(rows.map((r) => r.request_id));
  const missing = ids.filter((id) => !have.has(id));
  assert.deepEqual(missing, []);
  assert.equal(rows.length, 40);
});

test('"ledger": null: no file, /admin/usage answers 503', async () => {
  const mock = await startMock();
  const gw = await startGateway({ config: { providers: providers(mock), ledger: null } });
  assert.equal((await chat(gw, { model: 'cheap', messages: msgs('x [mock:tokens=2]') })).status, 200);
  const r = await fetch(`${gw.url}/admin/usage`, { headers: ADMIN });
  assert.equal(r.status, 503);
  const j = await r.json();
  assert.equal(j.error.code, 'ledger_disabled');
  await gw.stopClean();
  await mock.stopClean();
  assert.equal(fs.existsSync(path.join(gw.dir, 'sophia.db')), false);
  assert.ok(gw.logLines().some((l) => /ledger off/.test(l.msg)));
});

test('a file that is not SQLite: the gateway exits 1 and says why', async () => {
  const dir = fs.mkdtempSync(path.join(process.env.TMPDIR || '/tmp', 'sg-ledger-'));
  fs.writeFileSync(path.join(dir, 'sophia.db'), 'not a database at all, only some text\n'.repeat(20));
  const r = await run(GATEWAY_BIN, ['--listen', '127.0.0.1:0'], {
    cwd: dir, timeout: 5000, env: { ...process.env, LAMBDA_BASE_URL: 'http://127.0.0.1:9/v1' },
  });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /cannot use the ledger: ledger sophia\.db: file is not a database/);
  assert.doesNotMatch(r.stderr, /AddressSanitizer|LeakSanitizer|runtime error:/);
});

// ---- analytics over known rows ----------------------------------------------------------

const T0 = 1710460800; // 2024-03-15T00:00:00Z
// ts, key, team, model, provider, prompt, completion, cost, latency, ttft, status, outcome, estimated
const SEED = [
  [T0 + 10, 'k1', 't1', 'm1', 'p1', 10, 20, 0.001, 100, 50, 200, 'ok', 0],
  [T0 + 20, 'k1', 't1', 'm1', 'p1', 30, 40, 0.002, 300, 70, 200, 'ok', 1],
  [T0 + 30, 'k1', 't1', 'm1', 'p1', 5, 0, 0.0005, 200, null, 502, 'upstream_error', 1],
  [T0 + 40, 'k1', 't1', 'm1', 'p1', 0, 0, 0, 50, null, 499, 'client_closed', 0],
  [T0 + 86405, 'k2', null, 'm2', 'p2', 100, 200, 0.01, 1000, 400, 200, 'ok', 0],
  [T0 + 86406, 'k2', null, 'm2', 'p2', 1, 1, 0.00001, 10, 5, 200, 'upstream_truncated', 0],
  [T0 - 1, 'k1', 't1', 'm1', 'p1', 1000, 1000, 1, 1, 1, 200, 'ok', 0], // before the range
  [T0 + 2 * 86400, 'k1', 't1', 'm1', 'p1', 1000, 1000, 1, 1, 1, 200, 'ok', 0], // after it
];
const lit = (v) => (v === null ? 'NULL' : typeof v === 'string' ? `'${v}'` : String(v));
const insertSql = (rows) => rows.map((r) =>
  'INSERT INTO requests (ts, key, team, model, route, provider, prompt_tokens, completion_tokens,' +
  ' cost_usd, latency_ms, ttft_ms, status, outcome, estimated) VALUES (' +
  [r[0], r[1], r[2], r[3], r[3], ...r.slice(4)].map(lit).join(', ') + ');').join('\n');

const M1 = {
  group: 'm1', requests: 4, prompt_tokens: 45, completion_tokens: 60, total_tokens: 105,
  cost_usd: 0.0035, latency_ms: { p50: 100, p95: 300 }, ttft_ms: { p50: 50, p95: 70 },
  error_rate: 0.25, estimated_share: 0.5,
};
const M2 = {
  group: 'm2', requests: 2, prompt_tokens: 101, completion_tokens: 201, total_tokens: 302,
  cost_usd: 0.01001, latency_ms: { p50: 10, p95: 1000 }, ttft_ms: { p50: 5, p95: 400 },
  error_rate: 0.5, estimated_share: 0,
};
const TOTALS = {
  requests: 6, prompt_tokens: 146, completion_tokens: 261, total_tokens: 407, cost_usd: 0.01351,
  latency_ms: { p50: 100, p95: 1000 }, ttft_ms: { p50: 50, p95: 400 },
  error_rate: 0.333333, estimated_share: 0.333333,
};

// A client that sends a request and leaves at once.
function sendAndLeave(port, request) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.write(request); setTimeout(() => { s.destroy(); resolve(); }, 5); });
    s.on('error', resolve);
  });
}

test('/admin/usage and the usage command over a seeded ledger; budgets rebuilt at start', async () => {
  const config = { ledger: { retention_days: 0 }, providers: { lambda: { base_url: 'http://127.0.0.1:9/v1' } } };
  const first = await startGateway({ config }); // creates the file and its schema
  await first.stopClean();
  const db = path.join(first.dir, 'sophia.db');
  const now = Math.floor(Date.now() / 1000);
  const today = [[now - 1, 'k9', 't9', 'm9', 'p9', 1, 1, 0.5, 5, null, 200, 'ok', 0],
    [now - 1, 'k9', 't9', 'm9', 'p9', 1, 1, 0.25, 5, null, 200, 'ok', 0]];
  // many rows on another day: a query long enough for a client to leave during it
  const many = `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 199999)
    INSERT INTO requests (ts, key, model, cost_usd, latency_ms, status, outcome, estimated)
    SELECT ${T0 + 5 * 86400} + i / 1000.0, 'k' || (i % 1000), 'm' || (i % 7), 0.001, i % 997, 200, 'ok', 0 FROM n;`;
  const ins = await run('sqlite3', [db, `${insertSql([...SEED, ...today])}\n${many}`]);
  assert.equal(ins.code, 0, ins.stderr);

  const gw = await startGateway({ config, cwd: first.dir });
  const rebuilt = gw.logLines().find((l) => l.msg === 'budgets rebuilt from the ledger');
  assert.equal(rebuilt.pairs, 1);
  assert.equal(rebuilt.day_usd, 0.75);
  assert.equal(rebuilt.month_usd, 0.75);

  const get = async (q) => {
    const r = await fetch(`${gw.url}/admin/usage${q}`, { headers: ADMIN });
    return { status: r.status, body: await r.json() };
  };
  let r = await get('?from=2024-03-15&to=2024-03-17&group_by=model');
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(r.body, { from: T0, to: T0 + 2 * 86400, group_by: 'model', groups: [M2, M1], totals: TOTALS });

  r = await get(`?from=${T0}&to=2024-03-17T00:00:00Z&group_by=day`);
  assert.deepEqual(r.body.groups.map((g) => g.group), ['2024-03-16', '2024-03-15']);
  assert.deepEqual(r.body.groups[1], { ...M1, group: '2024-03-15' });

  r = await get('?from=2024-03-15&to=2024-03-17&group_by=team');
  assert.deepEqual(r.body.groups, [{ ...M2, group: null }, { ...M1, group: 't1' }]);

  r = await get('?from=2024-03-15&to=2024-03-17');
  assert.equal(r.body.group_by, null);
  assert.deepEqual(r.body.groups, [{ group: null, ...TOTALS }]);

  r = await get(''); // the last 24 hours
  assert.equal(r.status, 200);
  assert.equal(r.body.to - r.body.from, 86400);
  assert.equal(r.body.totals.requests, 2);
  assert.equal(r.body.totals.cost_usd, 0.75);
  assert.equal(r.body.totals.ttft_ms, null);

  for (const [q, re] of [['?group_by=colour', /key, team, model, provider, route, day/],
    ['?from=yesterday', /from: expected unix seconds/],
    ['?to=2024-02-30', /to: expected/],
    ['?from=2024-03-17&to=2024-03-15', /from must be before to/],
    ['?since=7d', /unknown parameter "since"/]]) {
    r = await get(q);
    assert.equal(r.status, 400, q);
    assert.equal(r.body.error.type, 'invalid_request_error');
    assert.match(r.body.error.message, re);
  }
  assert.equal((await fetch(`${gw.url}/admin/usage`, { method: 'POST', headers: ADMIN })).status, 405);
  assert.equal((await fetch(`${gw.url}/admin/usage`)).status, 401);

  // clients that leave while the query runs: nothing answers them, the gateway carries on
  const q = `/admin/usage?from=${T0 + 5 * 86400}&to=${T0 + 6 * 86400}&group_by=key`;
  await Promise.all(Array.from({ length: 5 }, () =>
    sendAndLeave(gw.port, `GET ${q} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ADMIN_KEY}\r\n\r\n`)));
  r = await get(q.slice('/admin/usage'.length));
  assert.equal(r.status, 200);
  assert.equal(r.body.totals.requests, 200000);
  assert.equal(r.body.groups.length, 1000);
  const hz = await fetch(`${gw.url}/healthz`);
  assert.equal(hz.status, 200);

  // the command reads the file while the gateway runs
  const cli = await run(GATEWAY_BIN, ['usage', '--db', db, '--since', '2024-03-15', '--until', '2024-03-17', '--by', 'model']);
  assert.equal(cli.code, 0, cli.stderr);
  const lines = cli.stdout.split('\n');
  assert.equal(lines[0], `usage from 2024-03-15T00:00:00Z to 2024-03-17T00:00:00Z (ledger ${db})`);
  const cells = lines.filter((l) => l && !/^-+$/.test(l)).slice(1).map((l) => l.trim().split(/\s{2,}/));
  assert.deepEqual(cells, [
    ['group', 'requests', 'tokens in', 'tokens out', 'cost USD', 'p50 ms', 'p95 ms', 'p50 ttft ms', 'error %', 'estimated %'],
    ['m2', '2', '101', '201', '0.010010', '10.0', '1000.0', '5.0', '50.0', '0.0'],
    ['m1', '4', '45', '60', '0.003500', '100.0', '300.0', '50.0', '25.0', '50.0'],
    ['total', '6', '146', '261', '0.013510', '100.0', '1000.0', '50.0', '33.3', '33.3'],
  ]);
  // columns line up: every line of the table is as wide as the header
  const table = lines.slice(2).filter(Boolean);
  assert.ok(table.every((l) => l.length === table[0].length), cli.stdout);

  await gw.stopClean();
  const json = await run(GATEWAY_BIN, ['usage', `--db=${db}`, '--since', String(T0), '--until', String(T0 + 2 * 86400), '--by', 'model', '--json']);
  assert.equal(json.code, 0, json.stderr);
  assert.deepEqual(JSON.parse(json.stdout), { from: T0, to: T0 + 2 * 86400, group_by: 'model', groups: [M2, M1], totals: TOTALS });

  const bad = await run(GATEWAY_BIN, ['usage', '--db', db, '--by', 'colour']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /group_by must be one of: key, team, model/);
  const missing = await run(GATEWAY_BIN, ['usage', '--db', path.join(first.dir, 'nope.db')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /cannot open the ledger/);
  assert.equal(fs.existsSync(path.join(first.dir, 'nope.db')), false);
  const help = await run(GATEWAY_BIN, ['usage', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--since WHEN/);
});
