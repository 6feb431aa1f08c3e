// Shared helpers for the integration tests: start the real binaries on free ports, talk to
// them with fetch, raw sockets and curl, and check that they exit cleanly (which, on the
// sanitizer build, also means no leak or UB report).
import { spawn, execFile } from 'node:child_process';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';

export const BUILD = process.env.SOPHIA_BUILD || path.resolve('build');
export const SANITIZED = process.env.SOPHIA_SANITIZED === '1';
export const GATEWAY_BIN = path.join(BUILD, 'sophia-gateway');
export const MOCK_BIN = path.join(BUILD, 'mockllm');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A child process with its output captured; `ready` resolves with the port it listens on.
class Proc {
  constructor(bin, args, env, readyRe, cwd) {
    this.out = '';
    this.err = '';
    this.exited = null;
    this.child = spawn(bin, args, { env: { ...process.env, ...env }, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    this.exitPromise = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exited = { code, signal };
        resolve(this.exited);
      });
    });
    this.ready = new Promise((resolve, reject) => {
      const check = () => {
        const m = (this.out + this.err).match(readyRe);
        if (m) resolve(Number(m[1]));
      };
      this.child.stdout.on('data', (d) => { this.out += d; check(); });
      this.child.stderr.on('data', (d) => { this.err += d; check(); });
      this.exitPromise.then((e) =>
        reject(new Error(`${path.basename(bin)} exited early (${JSON.stringify(e)}): ${this.err}`)));
    });
  }
  get pid() { return this.child.pid; }
  // Log lines (JSON) printed on stderr so far.
  logLines() {
    return this.err.split('\n').filter((l) => l.startsWith('{')).map((l) => {
      try { return JSON.parse(l); } catch { return { unparsed: l }; }
    });
  }
  // Sends SIGTERM (unless already gone) and waits; returns the exit status.
  async stop(signal = 'SIGTERM', timeoutMs = 20000) {
    if (!this.exited) this.child.kill(signal);
    const t = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const e = await this.exitPromise;
    clearTimeout(t);
    return e;
  }
  // Stops and asserts a clean exit with no sanitizer report.
  async stopClean() {
    const e = await this.stop();
    assert.doesNotMatch(this.err, /AddressSanitizer|LeakSanitizer|runtime error:/, 'sanitizer report');
    assert.deepEqual(e, { code: 0, signal: null }, `exit status; stderr tail: ${this.err.slice(-2000)}`);
  }
  rssKiB() {
    const s = fs.readFileSync(`/proc/${this.pid}/status`, 'utf8');
    return Number(s.match(/VmRSS:\s+(\d+)/)[1]);
  }
}

export async function startMock(args = [], env = {}) {
  const p = new Proc(MOCK_BIN, ['--listen', '127.0.0.1:0', '--quiet', ...args], env,
    /mockllm listening on [^\s:]+:(\d+)/);
  p.port = await p.ready;
  p.url = `http://127.0.0.1:${p.port}`;
  return p;
}

// Starts the gateway. opts.config: an object written to a temp JSON file; opts.env: extra
// environment; opts.mock: a mock whose /v1 becomes LAMBDA_BASE_URL; opts.listen: false leaves
// out the --listen 127.0.0.1:0 it otherwise passes (the configuration's "listen" applies).
export async function startGateway(opts = {}) {
  const env = { SOPHIA_LOG_LEVEL: 'debug', ...(opts.env || {}) };
  if (opts.mock) env.LAMBDA_BASE_URL = `${opts.mock.url}/v1`;
  const args = opts.listen === false ? [] : ['--listen', '127.0.0.1:0'];
  // Each gateway runs in a directory of its own (its default ledger, sophia.db, lands there).
  const dir = opts.cwd || fs.mkdtempSync(path.join(os.tmpdir(), 'sg-'));
  if (opts.config) {
    const f = path.join(dir, 'config.json');
    fs.writeFileSync(f, JSON.stringify(opts.config));
    args.push('--config', f);
  }
  // opts.wrap: a command the gateway runs under, e.g. ['prlimit', '--nofile=40:40'].
  const argv = [...args, ...(opts.args || [])];
  const p = new Proc(opts.wrap ? opts.wrap[0] : GATEWAY_BIN, opts.wrap ? [...opts.wrap.slice(1), GATEWAY_BIN, ...argv] : argv, env,
    /"msg":"sophia-gateway listening".*?"port":(\d+)/, dir);
  p.dir = dir;
  p.port = await p.ready;
  p.url = `http://127.0.0.1:${p.port}`;
  return p;
}

export async function mockStats(mock) {
  const r = await fetch(`${mock.url}/stats`);
  return r.json();
}

export async function resetMockStats(mock) {
  await fetch(`${mock.url}/stats/reset`, { method: 'POST' });
}

// Polls fn until it returns a truthy value or the deadline passes; returns the last value.
export async function waitFor(fn, timeoutMs = 5000, stepMs = 20) {
  const end = Date.now() + timeoutMs;
  let v;
  while (Date.now() < end) {
    v = await fn();
    if (v) return v;
    await sleep(stepMs);
  }
  return v;
}

export function chatBody(extra = {}) {
  return JSON.stringify({
    model: 'lambda/llama3.1-8b-instruct',
    messages: [{ role: 'user', content: 'Say hello' }],
    ...extra,
  });
}

export async function postChat(gw, body, headers = {}) {
  return fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

// Parses an SSE body into the list of data payloads.
export function sseData(text) {
  return text.split(/\r?\n\r?\n/).filter((e) => e.trim()).map((e) =>
    e.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n'));
}

// Sends raw bytes on a new TCP connection; resolves with everything read until the server
// closes or idleMs passes without data.
export function rawRequest(port, data, idleMs = 1000) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let timer;
    const done = () => { clearTimeout(timer); s.destroy(); resolve(buf.toString('latin1')); };
    const arm = () => { clearTimeout(timer); timer = setTimeout(done, idleMs); };
    s.on('connect', () => { s.write(data); arm(); });
    s.on('data', (d) => { buf = Buffer.concat([buf, d]); arm(); });
    s.on('end', done);
    s.on('error', (e) => (buf.length ? done() : reject(e)));
  });
}

export function run(cmd, args, opts = {}) {
  return new Promise((resolve) => {
    execFile(cmd, args, { maxBuffer: 64 * 1024 * 1024, ...opts }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
  });
}

// `promtool check metrics` on a Prometheus exposition: {code, out} (0: no error, no lint).
export function promtool(text) {
  return new Promise((resolve) => {
    const child = execFile('/usr/bin/promtool', ['check', 'metrics'], (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, out: stdout + stderr }));
    child.stdin.end(text);
  });
}

export function curl(args) {
  return run('curl', ['-sS', ...args]);
}

// A scripted upstream for cases the mock does not simulate (echoed secrets, out-of-range
// numbers, odd status lines): handler(req, res, body) answers each request; `requests` records
// {method, url, headers, body}. The gateway's health checks (GET …/models) are answered 404
// (a server that lists no models) and not recorded, unless opts.probes is true. Resolves once
// listening; close() stops it.
export async function startScripted(handler, opts = {}) {
  const http = await import('node:http');
  const requests = [];
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      if (!opts.probes && req.method === 'GET' && /\/models$/.test(req.url)) {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end('{"error":{"message":"not found"}}');
        return;
      }
      requests.push({ method: req.method, url: req.url, headers: { ...req.headers }, body });
      handler(req, res, body);
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const port = srv.address().port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise((r) => { srv.closeAllConnections?.(); srv.close(r); }),
  };
}

// A JWT-shaped Snowflake PAT whose exp is expOffsetS seconds from now.
export function makePat(expOffsetS) {
  const b64u = (x) => Buffer.from(x).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const header = { kid: Math.random().toString(16).slice(2, 14), alg: 'ES256' };
  const payload = { p: Math.random().toString(16).slice(2), iss: 'SF', iat: now, exp: now + expOffsetS };
  const sig = Buffer.from(Array.from({ length: 64 }, () => Math.floor(Math.random() * 256)));
  return `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}.${b64u(sig)}`;
}
