// --workers N: worker processes on one port under a master. Requests are spread over the
// workers; a budget is shared (exactly 10 worst cases admitted of 300 concurrent requests,
// whichever worker takes them); a worker killed with SIGKILL is restarted, and what its
// requests had reserved (here the one concurrency slot) is given back; SIGHUP reaches every
// worker; SIGTERM stops them all and the master exits 0.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { startMock, startGateway, sleep, waitFor, SANITIZED } from './lib.mjs';

const noEnv = { LAMBDA_BASE_URL: '', LAMBDA_API_KEY: '', SNOWFLAKE_ACCOUNT: '' };
const hash = (k) => `sha256:${crypto.createHash('sha256').update(k).digest('hex')}`;
const procs = [];
after(async () => { for (const p of procs) await p.stop(); });

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function workersGateway(mock, extra, n = 2) {
  const port = await freePort();
  const gw = await startGateway({
    env: noEnv,
    listen: false,
    args: ['--listen', `127.0.0.1:${port}`, '--workers', String(n)],
    config: {
      providers: { lambda: { base_url: `${mock.url}/v1`, api_key: null, models: [{ id: 'm', price_in: 0, price_out: 1 }] } },
      ...extra,
    },
  });
  procs.push(gw);
  // The ready line is the first worker's; wait for all of them.
  const listening = () => gw.logLines().filter((l) => l.msg === 'sophia-gateway listening').length;
  assert.ok(await waitFor(() => listening() >= n, 10000), 'every worker listens');
  return gw;
}

// A new connection per request (Connection: close), so the kernel spreads them over the workers.
function chat(gw, key, body) {
  return fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, connection: 'close' },
    body: JSON.stringify({ model: 'lambda/m', messages: [{ role: 'user', content: 'hello' }], ...body }),
  });
}

function workerPids(gw) {
  const kids = fs.readFileSync(`/proc/${gw.pid}/task/${gw.pid}/children`, 'utf8').trim();
  return kids ? kids.split(/\s+/).map(Number) : [];
}

test('requests are spread over the workers, and a budget is shared: exactly 10 of 300 concurrent requests are admitted', async () => {
  const mock = await startMock(['--ttft-ms', '0', '--itl-ms', '0']);
  procs.push(mock);
  // $1 per 1M output tokens: the worst case of max_tokens 1000 is $0.001; the budget holds 10.
  const gw = await workersGateway(mock, { keys: [{ name: 'b', hash: hash('sk-b'), budget: { daily_usd: 0.01 } }] });
  const body = { max_tokens: 1000, messages: [{ role: 'user', content: '[mock:tokens=5,ttft_ms=1500] x' }] };
  const rs = await Promise.all(Array.from({ length: 300 }, () => chat(gw, 'sk-b', body)));
  assert.equal(rs.filter((r) => r.status === 200).length, 10);
  assert.equal(rs.filter((r) => r.status === 429).length, 290);
  await Promise.all(rs.map((r) => r.arrayBuffer()));
  const served = await waitFor(() => {
    const ws = new Set(gw.logLines().filter((l) => l.msg === 'request').map((l) => l.worker));
    return ws.has(0) && ws.has(1) ? ws : null;
  });
  assert.ok(served, 'both workers answered requests');
  // /metrics says which worker answered; the budget gauge is the shared one in each.
  const seen = new Set();
  for (let i = 0; i < 40 && seen.size < 2; i++) {
    const t = await (await fetch(`${gw.url}/metrics`, { headers: { connection: 'close' } })).text();
    assert.match(t, /^sophia_workers 2$/m);
    seen.add(Number(t.match(/^sophia_worker (\d+)$/m)[1]));
    const spent = Number(t.match(/^sophia_budget_spent_usd\{scope="key",name="b",period="daily"\} (\S+)$/m)[1]);
    assert.ok(Math.abs(spent - 10 * 5 / 1e6) < 1e-12, `spent ${spent}`);
  }
  assert.deepEqual([...seen].sort(), [0, 1], 'both workers answered /metrics');
  // What the 10 spent (5 tokens each) is known to every worker: 9 more worst cases fit.
  const more = await Promise.all(Array.from({ length: 60 }, () => chat(gw, 'sk-b', body)));
  assert.equal(more.filter((r) => r.status === 200).length, 9);
  await Promise.all(more.map((r) => r.arrayBuffer()));
  const e = await gw.stop();
  assert.deepEqual(e, { code: 0, signal: null });
  const stopped = gw.logLines().filter((l) => l.msg === 'worker stopped');
  assert.equal(stopped.length, 2);
  assert.doesNotMatch(gw.err, /AddressSanitizer|LeakSanitizer|runtime error:/);
});

test('a killed worker is restarted and its reservation given back; SIGHUP reaches every worker', async () => {
  const mock = await startMock(['--ttft-ms', '0', '--itl-ms', '0']);
  procs.push(mock);
  // One request at a time across the gateway.
  const gw = await workersGateway(mock, { keys: [{ name: 'c', hash: hash('sk-c'), limits: { concurrent: 1 } }] });
  const slow = chat(gw, 'sk-c', { messages: [{ role: 'user', content: '[mock:tokens=5,ttft_ms=60000] x' }] }).catch(() => null);
  await sleep(300);
  const busy = await chat(gw, 'sk-c', {});
  assert.equal(busy.status, 429, 'the slot is taken');
  await busy.arrayBuffer();
  // Kill every worker (whichever holds the slow request): the master restarts them and gives
  // back what they had in flight.
  const before = workerPids(gw);
  assert.equal(before.length, 2);
  for (const pid of before) process.kill(pid, 'SIGKILL');
  await slow;
  assert.ok(await waitFor(() => gw.logLines().filter((l) => l.msg === 'sophia-gateway listening').length >= 4, 10000),
    'both workers listen again');
  const after2 = workerPids(gw);
  assert.equal(after2.length, 2);
  assert.ok(after2.every((p) => !before.includes(p)));
  assert.equal(gw.logLines().filter((l) => l.msg === 'worker died; restarting it').length, 2);
  const r = await chat(gw, 'sk-c', {});
  assert.equal(r.status, 200, 'the slot was given back');
  await r.arrayBuffer();

  process.kill(gw.pid, 'SIGHUP');
  assert.ok(await waitFor(() => gw.logLines().filter((l) => l.msg === 'configuration reloaded').length >= 2),
    'each worker reloaded');
  const e = await gw.stop();
  assert.deepEqual(e, { code: 0, signal: null });
  if (!SANITIZED) assert.doesNotMatch(gw.err, /runtime error:/);
});

test('--workers needs a fixed port and a number from 1 to 64', async () => {
  const { spawnSync } = await import('node:child_process');
  const { GATEWAY_BIN } = await import('./lib.mjs');
  const bad = spawnSync(GATEWAY_BIN, ['--workers', '0'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--workers takes a number from 1 to 64/);
  const zero = spawnSync(GATEWAY_BIN, ['--listen', '127.0.0.1:0', '--workers', '2'], {
    encoding: 'utf8', env: { ...process.env, LAMBDA_BASE_URL: 'http://127.0.0.1:9/v1' },
  });
  assert.equal(zero.status, 2);
  assert.match(zero.stderr, /--workers needs a fixed port/);
});
