// Flow control: backpressure from slow readers, stalled clients, cancellation in every phase
// of a request, graceful shutdown, and many concurrent streams (mock alone and through the
// gateway).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fs from 'node:fs';
import {
  startMock, startGateway, mockStats, waitFor, sleep, chatBody, SANITIZED,
} from './lib.mjs';

const WORDS = 'The quick brown fox jumps over the lazy dog while mock tokens stream steadily to clients'.split(' ');

// Every process started here; stopped (forcefully if a test failed half-way) at the end.
const procs = new Set();
after(async () => {
  for (const p of procs) if (!p.exited) await p.stop('SIGKILL');
});
async function mockP(args) { const m = await startMock(args); procs.add(m); return m; }
async function gatewayP(opts) { const g = await startGateway(opts); procs.add(g); return g; }
async function stopBoth(...ps) {
  for (const p of ps) { await p.stopClean(); procs.delete(p); }
}

// A raw HTTP/1.1 chat request (Connection: close, so the server's close ends the response).
function chatRequest(directive, { stream = true, id, includeUsage = false } = {}) {
  const extra = { stream, messages: [{ role: 'user', content: `Say hello ${directive}` }] };
  if (includeUsage) extra.stream_options = { include_usage: true };
  const body = chatBody(extra);
  return 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
    (id ? `X-Request-Id: ${id}\r\n` : '') +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

// A raw TCP client: sends `request`, counts bytes and SSE "data: " lines as they arrive,
// keeps the text when keep is set and always the last bytes (tail).
function rawClient(port, request, { keep = true } = {}) {
  const sock = net.connect(port, '127.0.0.1');
  const c = { sock, bytes: 0, events: 0, text: '', tail: '', error: null, closedAt: 0 };
  c.connected = new Promise((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  c.connected.catch(() => {});
  sock.on('connect', () => sock.write(request));
  sock.on('data', (d) => {
    c.bytes += d.length;
    const s = d.toString('latin1');
    const joined = c.tail + s;
    c.events += (joined.match(/data: /g) || []).length - (c.tail.match(/data: /g) || []).length;
    c.tail = joined.slice(-64);
    if (keep) c.text += s;
  });
  sock.on('error', (e) => { c.error = e; });
  c.closed = new Promise((resolve) => sock.on('close', () => { c.closedAt = Date.now(); resolve(); }));
  c.done = () => /data: \[DONE\]\n\n\r\n0\r\n\r\n$/.test(c.tail);
  return c;
}

// Decodes a complete raw chunked HTTP response: { head, body, complete }.
function dechunk(raw) {
  const i = raw.indexOf('\r\n\r\n');
  assert.ok(i > 0, 'response head');
  const head = raw.slice(0, i);
  let p = i + 4;
  let body = '';
  for (;;) {
    const e = raw.indexOf('\r\n', p);
    if (e < 0) return { head, body, complete: false };
    const n = parseInt(raw.slice(p, e), 16);
    assert.ok(n >= 0, `chunk size at ${p}`);
    if (n === 0) return { head, body, complete: true };
    if (e + 2 + n + 2 > raw.length) return { head, body, complete: false };
    body += raw.slice(e + 2, e + 2 + n);
    p = e + 2 + n + 2;
  }
}

// Asserts an SSE body carries exactly n content tokens, in the mock's order, then [DONE].
function assertFullStream(body, n) {
  const events = body.split('\n\n').filter((e) => e).map((e) => {
    assert.ok(e.startsWith('data: '), `SSE event: ${e.slice(0, 80)}`);
    return e.slice(6);
  });
  assert.equal(events.at(-1), '[DONE]');
  let text = '';
  let tokens = 0;
  for (const e of events.slice(0, -1)) {
    const j = JSON.parse(e);
    for (const ch of j.choices || []) {
      const c = ch.delta && ch.delta.content;
      if (c) { text += c; tokens++; }
    }
  }
  assert.equal(tokens, n, 'content chunks');
  let expected = '';
  for (let i = 0; i < n; i++) expected += `${WORDS[i % 16]} `;
  assert.ok(text === expected, 'content arrives complete and in order');
}

function fdLimit() {
  const m = fs.readFileSync('/proc/self/limits', 'utf8').match(/Max open files\s+(\d+|unlimited)/);
  return !m || m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

async function requestLog(gw, id, timeoutMs = 2000) {
  return waitFor(() => gw.logLines().find((l) => l.msg === 'request' && l.request_id === id), timeoutMs);
}

// ---- 1. backpressure -------------------------------------------------------------------------

test('slow reader: the gateway stops reading upstream; memory stays bounded by high_watermark', async () => {
  const mock = await mockP();
  const gw = await gatewayP({ mock, config: { limits: { high_watermark: 65536, low_watermark: 16384 } } });
  // Control: the same, but a watermark so high that nothing stops the gateway from queueing.
  const mockCtl = await mockP();
  const gwCtl = await gatewayP({
    mock: mockCtl,
    config: { limits: { high_watermark: 512 * 1024 * 1024, low_watermark: 16384 } },
  });
  // Warm up (the first request initialises curl and the allocator's arenas), then settle.
  for (const g of [gw, gwCtl]) {
    const w = rawClient(g.port, chatRequest('[mock:tokens=2000,itl_ms=0]'));
    await w.closed;
    assert.ok(w.done(), 'warm-up stream completes');
  }
  await sleep(200);
  const base = gw.rssKiB();
  const baseCtl = gwCtl.rssKiB();

  const huge = chatRequest('[mock:tokens=200000,itl_ms=0]', { id: 'slow-reader' });
  const c = rawClient(gw.port, huge, { keep: false });
  const ctl = rawClient(gwCtl.port, huge, { keep: false });
  await Promise.all([c.connected, ctl.connected]);
  c.sock.pause();
  ctl.sock.pause();
  let peak = base;
  let peakCtl = baseCtl;
  const t0 = Date.now();
  while (Date.now() - t0 < 3000) {
    peak = Math.max(peak, gw.rssKiB());
    peakCtl = Math.max(peakCtl, gwCtl.rssKiB());
    await sleep(50);
  }
  const growth = peak - base;
  const growthCtl = peakCtl - baseCtl;
  console.log(`# slow reader: gateway RSS ${base} KiB -> peak ${peak} KiB (+${growth} KiB) with ` +
    `high_watermark 64 KiB; +${growthCtl} KiB with high_watermark 512 MiB (control)`);

  const st = await mockStats(mock);
  assert.equal(st.streams_started, 2, 'warm-up + slow stream');
  assert.equal(st.streams_completed, 1, 'only the warm-up completed: the slow stream is not');
  assert.equal(st.active, 1, 'the slow stream is still open');
  assert.ok(st.paused > 0, `the mock paused its writes (gateway stopped reading): ${JSON.stringify(st)}`);
  // Without the watermark the gateway reads the whole answer into memory: the mock is never
  // held back and finishes, which shows it is the watermark that bounds the queue.
  const stCtl = await mockStats(mockCtl);
  assert.equal(stCtl.streams_completed, 2, 'control: the gateway swallowed the whole answer');
  assert.ok(c.bytes < 2 * 1024 * 1024, `client read at most its socket buffer (${c.bytes} bytes)`);
  if (!SANITIZED) {
    assert.ok(growth < 4096, `gateway RSS grew by ${growth} KiB while the client did not read`);
    assert.ok(growthCtl > 16 * 1024, `control RSS grew by only ${growthCtl} KiB`);
  }
  c.sock.destroy();
  ctl.sock.destroy();
  await waitFor(async () => (await mockStats(mock)).active === 0, 2000);
  assert.equal((await mockStats(mock)).streams_aborted, 1, 'the slow stream was aborted upstream');
  await stopBoth(gwCtl, mockCtl);

  // A stalled reader that resumes gets the whole stream, in order, ending with [DONE].
  const pausedBefore = (await mockStats(mock)).paused;
  const r = rawClient(gw.port, chatRequest('[mock:tokens=50000,itl_ms=0]'));
  await r.connected;
  r.sock.pause();
  const paused = await waitFor(async () => (await mockStats(mock)).paused > pausedBefore, 3000, 50);
  assert.ok(paused, 'the mock was held back while the client did not read');
  await sleep(500);
  const mid = await mockStats(mock);
  assert.equal(mid.active, 1);
  const t1 = Date.now();
  r.sock.resume();
  const ended = await Promise.race([r.closed.then(() => true), sleep(10000).then(() => false)]);
  if (!ended) r.sock.destroy();
  assert.ok(ended, `the resumed stream ended (got ${r.bytes} bytes)`);
  console.log(`# resumed reader: 50000 tokens (${r.bytes} bytes) delivered in ${Date.now() - t1} ms after resume`);
  const { body, complete } = dechunk(r.text);
  assert.ok(complete, 'chunked body terminated');
  assertFullStream(body, 50000);
  const end = await mockStats(mock);
  assert.equal(end.streams_completed, mid.streams_completed + 1);
  assert.equal(end.active, 0);
  await stopBoth(gw, mock);
});

test('low_watermark 0: a paused reader that resumes still gets the whole stream', async () => {
  // 0 is a valid low_watermark (integer >= 0, below high_watermark): output resumes once the
  // client's queue is empty.
  const mock = await mockP();
  const gw = await gatewayP({ mock, config: { limits: { high_watermark: 65536, low_watermark: 0 } } });
  const r = rawClient(gw.port, chatRequest('[mock:tokens=50000,itl_ms=0]', { id: 'low0' }));
  try {
    await r.connected;
    r.sock.pause();
    assert.ok(await waitFor(async () => (await mockStats(mock)).paused > 0, 3000, 50),
      'backpressure engaged while the client did not read');
    await sleep(300);
    r.sock.resume();
    const closed = await Promise.race([r.closed.then(() => true), sleep(5000).then(() => false)]);
    const st = await mockStats(mock);
    assert.ok(closed, `the stream ended within 5 s of resuming (got ${r.events} events, ` +
      `${r.bytes} bytes; mock ${JSON.stringify({ active: st.active, completed: st.streams_completed })})`);
    const { body, complete } = dechunk(r.text);
    assert.ok(complete, 'chunked body terminated');
    assertFullStream(body, 50000);
  } finally {
    r.sock.destroy();
  }
  await stopBoth(gw, mock);
});

// The write-stall timeout must hold whatever the watermarks: also when they are smaller than
// one SSE event (every event then bypasses the per-iteration output buffer).
for (const [label, wm] of [
  ['default watermarks', {}],
  ['high_watermark below one SSE event', { high_watermark: 128, low_watermark: 64 }],
]) {
  test(`a client that stops reading is disconnected after write_stall_timeout_ms (${label})`, async () => {
    const mock = await mockP();
    const gw = await gatewayP({ mock, config: { limits: { write_stall_timeout_ms: 1500, ...wm } } });
    const c = rawClient(gw.port, chatRequest('[mock:tokens=200000,itl_ms=0]', { id: 'stalled' }), { keep: false });
    try {
      await c.connected;
      c.sock.pause();
      const t0 = Date.now();
      const st = await waitFor(async () => {
        const s = await mockStats(mock);
        return s.streams_aborted >= 1 ? s : null;
      }, 4500, 25);
      const dt = Date.now() - t0;
      console.log(`# stalled client (${label}): upstream aborted ${st ? `${dt} ms` : 'NOT within 4.5 s'} ` +
        `after the client stopped reading`);
      assert.ok(st, 'the gateway disconnected the stalled client and aborted the upstream stream');
      assert.equal(st.streams_completed, 0);
      assert.equal(st.active, 0);
      assert.ok(dt >= 1300 && dt < 4000, `aborted after ${dt} ms (stall timeout 1500 ms)`);
      const log = await requestLog(gw, 'stalled');
      assert.ok(log, 'request logged');
      assert.equal(log.outcome, 'client_closed');
      assert.equal(log.partial, true);
      assert.match(gw.err, /client stalled/);
      // The connection is closed: what was already in the socket buffers arrives, then EOF,
      // without the end of the stream.
      c.sock.resume();
      const closed = await Promise.race([c.closed.then(() => true), sleep(3000).then(() => false)]);
      assert.ok(closed, 'the gateway closed the connection');
      assert.ok(!c.done(), 'the stream was cut, not completed');
    } finally {
      c.sock.destroy();
    }
    await stopBoth(gw, mock);
  });
}

// ---- 2. cancellation -----------------------------------------------------------------------

test('client disconnect aborts the upstream at once, in every phase', async (t) => {
  const mock = await mockP();
  const gw = await gatewayP({ mock });
  const figures = [];

  // Waits for the mock to count the abort and go idle; returns the latency from t0.
  async function abortLatency(counter, before, t0) {
    const s = await waitFor(async () => {
      const x = await mockStats(mock);
      return x[counter] > before && x.active === 0 ? x : null;
    }, 3000, 5);
    assert.ok(s, `mock ${counter} incremented and active back to 0`);
    return Date.now() - t0;
  }
  async function checkLog(id) {
    const l = await requestLog(gw, id);
    assert.ok(l, `request ${id} logged`);
    assert.equal(l.outcome, 'client_closed');
    assert.equal(l.partial, true);
    assert.equal(l.status, 499);
    return l;
  }

  await t.test('(a) waiting for the upstream response head', async () => {
    const before = await mockStats(mock);
    const c = rawClient(gw.port, chatRequest('[mock:headers_delay_ms=3000]', { id: 'cancel-a' }));
    await c.connected;
    assert.ok(await waitFor(async () => (await mockStats(mock)).active === 1, 2000), 'request reached the mock');
    await sleep(100);
    const t0 = Date.now();
    c.sock.destroy();
    const dt = await abortLatency('streams_aborted', before.streams_aborted, t0);
    figures.push(`head ${dt} ms`);
    assert.ok(dt < 500, `upstream aborted ${dt} ms after the client left`);
    assert.equal(c.bytes, 0, 'nothing was sent to the client yet');
    await checkLog('cancel-a');
  });

  await t.test('(b) before the first token', async () => {
    const before = await mockStats(mock);
    const c = rawClient(gw.port, chatRequest('[mock:ttft_ms=3000]', { id: 'cancel-b' }));
    await c.connected;
    assert.ok(await waitFor(async () => (await mockStats(mock)).streams_started > before.streams_started, 2000),
      'upstream stream head sent');
    await sleep(100);
    const t0 = Date.now();
    c.sock.destroy();
    const dt = await abortLatency('streams_aborted', before.streams_aborted, t0);
    figures.push(`before first token ${dt} ms`);
    assert.ok(dt < 500, `upstream aborted ${dt} ms after the client left`);
    await checkLog('cancel-b');
  });

  await t.test('(c) mid-stream', async () => {
    const before = await mockStats(mock);
    const c = rawClient(gw.port, chatRequest('[mock:itl_ms=50,tokens=1000]', { id: 'cancel-c' }));
    await c.connected;
    assert.ok(await waitFor(() => c.events >= 5, 3000), 'a few events received');
    const t0 = Date.now();
    c.sock.destroy();
    const dt = await abortLatency('streams_aborted', before.streams_aborted, t0);
    figures.push(`mid-stream ${dt} ms`);
    assert.ok(dt < 500, `upstream aborted ${dt} ms after the client left`);
    const l = await checkLog('cancel-c');
    assert.ok(l.completion_tokens > 0, `usage so far is accounted: ${JSON.stringify(l)}`);
    assert.ok(l.completion_tokens < 1000);
  });

  await t.test('(d) non-streaming request', async () => {
    const before = await mockStats(mock);
    const ac = new AbortController();
    const p = fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'cancel-d' },
      body: chatBody({ messages: [{ role: 'user', content: 'Say hello [mock:ttft_ms=3000]' }] }),
      signal: ac.signal,
    });
    const rejected = assert.rejects(p, { name: 'AbortError' });
    assert.ok(await waitFor(async () => (await mockStats(mock)).active === 1, 2000), 'request reached the mock');
    await sleep(100);
    const t0 = Date.now();
    ac.abort();
    await rejected;
    const dt = await abortLatency('nonstream_aborted', before.nonstream_aborted, t0);
    figures.push(`non-stream ${dt} ms`);
    assert.ok(dt < 500, `upstream aborted ${dt} ms after the client left`);
    await checkLog('cancel-d');
  });

  console.log(`# abort latency: ${figures.join(', ')}`);
  const st = await mockStats(mock);
  assert.equal(st.streams_completed + st.nonstream_completed, 0, 'no cancelled request ran to the end');
  await stopBoth(gw, mock);
});

// ---- 3. graceful shutdown ------------------------------------------------------------------

test('SIGTERM: in-flight streams finish, new connections are refused, exit 0', async () => {
  const mock = await mockP();
  const gw = await gatewayP({ mock });
  const c = rawClient(gw.port, chatRequest('[mock:itl_ms=20,tokens=50]', { id: 'drain-1' }));
  await c.connected;
  assert.ok(await waitFor(() => c.events >= 3, 3000), 'stream started');
  const t0 = Date.now();
  gw.child.kill('SIGTERM');
  assert.ok(await waitFor(() => /SIGTERM received/.test(gw.err), 2000), 'signal seen');
  await sleep(50);
  const refused = await new Promise((resolve) => {
    const s = net.connect(gw.port, '127.0.0.1');
    s.on('connect', () => { s.destroy(); resolve(null); });
    s.on('error', (e) => resolve(e.code));
  });
  assert.equal(refused, 'ECONNREFUSED', 'no new connection after the signal');
  await c.closed;
  const { body, complete } = dechunk(c.text);
  assert.ok(complete, 'response terminated');
  assertFullStream(body, 50);
  const exit = await Promise.race([gw.exitPromise, sleep(5000).then(() => null)]);
  const dt = Date.now() - t0;
  assert.ok(exit, 'the gateway exited once the stream was done');
  assert.ok(dt < 4000, `exit ${dt} ms after SIGTERM (grace period is 10 s, but nothing was left)`);
  await stopBoth(gw);
  assert.equal((await mockStats(mock)).streams_completed, 1);
  assert.match(gw.err, /"msg":"stopped"/);
  const l = gw.logLines().find((x) => x.msg === 'request' && x.request_id === 'drain-1');
  assert.equal(l.outcome, 'ok');
  await stopBoth(mock);
});

test('SIGTERM: shutdown_grace_ms ends a long stream and the process still exits 0', async () => {
  const mock = await mockP();
  const gw = await gatewayP({ mock, config: { shutdown_grace_ms: 500 } });
  const c = rawClient(gw.port, chatRequest('[mock:itl_ms=100,tokens=100]', { id: 'grace-1' }));
  await c.connected;
  assert.ok(await waitFor(() => c.events >= 3, 3000), 'stream started');
  const t0 = Date.now();
  gw.child.kill('SIGTERM');
  await Promise.race([c.closed, sleep(5000)]);
  const closedAfter = c.closedAt ? c.closedAt - t0 : Infinity;
  const exit = await Promise.race([gw.exitPromise, sleep(5000).then(() => null)]);
  const exitAfter = Date.now() - t0;
  console.log(`# grace 500 ms: client closed ${closedAfter} ms, process exited ${exitAfter} ms after SIGTERM`);
  assert.ok(closedAfter >= 400 && closedAfter < 1500, `stream ended ${closedAfter} ms after SIGTERM`);
  assert.ok(!c.done(), 'the stream was cut short');
  assert.ok(exit, 'process exited');
  assert.ok(exitAfter < 2500, `exited ${exitAfter} ms after SIGTERM`);
  await stopBoth(gw);
  const st = await waitFor(async () => {
    const s = await mockStats(mock);
    return s.streams_aborted === 1 && s.active === 0 ? s : null;
  }, 2000);
  assert.ok(st, 'the upstream stream was aborted');
  const l = gw.logLines().find((x) => x.msg === 'request' && x.request_id === 'grace-1');
  assert.ok(l && l.partial === true, `request logged as partial: ${JSON.stringify(l)}`);
  await stopBoth(mock);
});

// ---- 4. capacity ---------------------------------------------------------------------------

// Opens n raw streaming requests at once; resolves when all have closed, with the clients.
async function manyStreams(port, n, request, onAllOpen) {
  const clients = [];
  for (let i = 0; i < n; i++) clients.push(rawClient(port, request, { keep: false }));
  const results = await Promise.allSettled(clients.map((c) => c.connected));
  const failed = results.filter((r) => r.status === 'rejected');
  assert.equal(failed.length, 0, `connections failed: ${failed[0] && failed[0].reason}`);
  const during = onAllOpen ? await onAllOpen() : null;
  await Promise.all(clients.map((c) => c.closed));
  return { clients, during };
}

test('the mock alone holds 10,000 concurrent streams', async (t) => {
  const lim = fdLimit();
  // Node holds the 10,000 client sockets, the mock (its own process) the 10,000 server ones.
  if (lim < 10500) {
    t.skip(`needs an open-file limit of at least 10500 (ulimit -n is ${lim})`);
    return;
  }
  const N = 10000;
  const mock = await mockP();
  const t0 = Date.now();
  const { clients, during } = await manyStreams(mock.port, N, chatRequest('[mock:ttft_ms=3000,tokens=2]'),
    () => waitFor(async () => {
      const s = await mockStats(mock);
      return s.max_active >= N ? s : null;
    }, 3000, 50));
  const dt = Date.now() - t0;
  const ok = clients.filter((c) => c.done()).length;
  const st = await mockStats(mock);
  console.log(`# mock: ${N} streams, max_active ${st.max_active}, ${ok} completed in ${dt} ms`);
  assert.ok(during, `max_active reached ${st.max_active} while the streams were open`);
  assert.ok(st.max_active >= N);
  assert.equal(ok, N, 'every stream ended with [DONE]');
  assert.equal(st.streams_completed, N);
  assert.equal(st.active, 0);
  await stopBoth(mock);
});

test('the gateway holds 2,000 concurrent streams', async (t) => {
  const lim = fdLimit();
  if (lim < 2500) {
    t.skip(`needs an open-file limit of at least 2500 (ulimit -n is ${lim})`);
    return;
  }
  const N = 2000;
  const mock = await mockP();
  const gw = await gatewayP({ mock });
  const t0 = Date.now();
  const { clients } = await manyStreams(gw.port, N, chatRequest('[mock:ttft_ms=1500,tokens=3]'));
  const dt = Date.now() - t0;
  const ok = clients.filter((c) => c.done()).length;
  const st = await mockStats(mock);
  console.log(`# gateway: ${N} streams, mock max_active ${st.max_active}, ${ok} completed in ${dt} ms`);
  assert.equal(ok, N, 'every stream ended with [DONE]');
  assert.ok(st.max_active >= N, `all ${N} were open upstream at once (max_active ${st.max_active})`);
  assert.equal(st.streams_completed, N);
  // Log lines come from the log writer thread: wait for all of them.
  const okLines = () => gw.logLines().filter((l) => l.msg === 'request' && l.outcome === 'ok').length;
  await waitFor(() => okLines() >= N, 5000);
  assert.equal(okLines(), N);
  await stopBoth(gw, mock);
});

test('a stderr nobody reads never blocks the loop: log lines are dropped, counted and reported', async () => {
  const { spawn } = await import('node:child_process');
  const { GATEWAY_BIN } = await import('./lib.mjs');
  const os = await import('node:os');
  const path = await import('node:path');
  const mock = await mockP(['--ttft-ms', '0', '--itl-ms', '0']);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sg-'));
  const child = spawn(GATEWAY_BIN, ['--listen', '127.0.0.1:0'], {
    cwd: dir,
    env: { ...process.env, SOPHIA_LOG_LEVEL: 'debug', LAMBDA_BASE_URL: `${mock.url}/v1`, SNOWFLAKE_ACCOUNT: '' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exit = new Promise((r) => child.on('exit', (code, signal) => r({ code, signal })));
  try {
    let err = '';
    const port = await new Promise((resolve, reject) => {
      child.stderr.on('data', (d) => {
        err += d;
        const m = err.match(/"msg":"sophia-gateway listening".*?"port":(\d+)/);
        if (m) resolve(Number(m[1]));
      });
      exit.then(() => reject(new Error(`exited early: ${err}`)));
    });
    // Stop reading stderr: the pipe fills and the log writer blocks in write(). Each request
    // logs a line of about 560 bytes: 6,000 of them are more than the 1 MiB buffer holds.
    child.stderr.pause();
    const url = `http://127.0.0.1:${port}`;
    const body = chatBody();
    const t0 = Date.now();
    let n = 0;
    for (let b = 0; b < 120; b++) {
      const rs = await Promise.all(Array.from({ length: 50 }, () =>
        fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
          .then((r) => r.json())));
      n += rs.filter((j) => j.choices).length;
    }
    assert.equal(n, 6000);
    const elapsed = Date.now() - t0;
    assert.ok(elapsed < (SANITIZED ? 90000 : 30000), `6,000 requests took ${elapsed} ms with stderr stalled`);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    const dropped = Number(metrics.match(/^sophia_log_lines_dropped_total (\d+)$/m)[1]);
    assert.ok(dropped > 0, 'lines were dropped while stderr was stalled');
    // Reading again: everything buffered comes out, then the report of what was lost.
    child.stderr.resume();
    child.kill('SIGTERM');
    assert.deepEqual(await exit, { code: 0, signal: null });
    assert.match(err, /"msg":"log lines dropped: stderr is not read fast enough","dropped":\d+/);
    assert.match(err, /"msg":"stopped"/);
    assert.doesNotMatch(err, /AddressSanitizer|runtime error:/);
  } finally {
    child.stderr.resume();
    child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('out of file descriptors: 503 server_overloaded with a warning and a metric, never "upstream unreachable"', async () => {
  const mock = await mockP(['--ttft-ms', '1500', '--itl-ms', '0']);
  // 64 descriptors: 32 kept for the process, 16 connections with their upstream sockets.
  const gw = await gatewayP({ mock, wrap: ['prlimit', '--nofile=64:64'] });
  assert.match(gw.err, /"msg":"file descriptors","open_file_limit":64,"max_connections":16/);
  assert.match(gw.err, /the open file limit \(64\) holds only 16 connections/);
  // The load's keep-alive connections belong to an agent of their own, closed afterwards: idle
  // client connections count against max_connections until they close.
  const { Agent } = await import('undici');
  const load = new Agent();
  const one = (dispatcher) => fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: chatBody(), dispatcher,
  }).then(async (r) => ({ status: r.status, body: await r.json() }), (e) => ({ status: 'failed', e: String(e) }));
  const rs = await Promise.all(Array.from({ length: 60 }, () => one(load)));
  const by = (s) => rs.filter((r) => r.status === s);
  const seen = JSON.stringify(rs.map((r) => r.status));
  assert.ok(by(503).length > 0, seen);
  for (const r of by(503)) assert.equal(r.body.error.code, 'server_overloaded');
  assert.equal(by(200).length + by(503).length, 60, `only 200 and 503: ${seen}`);
  assert.ok(by(200).length >= 8, `the connections the limit allows were served: ${seen}`);
  // Once the load is gone (its connections closed, which the gateway sees a moment later),
  // everything works again.
  await load.close();
  const after = await waitFor(async () => (await one()).status === 200, 3000, 50);
  assert.ok(after, 'a request after the load is served');
  await stopBoth(gw, mock);
});
