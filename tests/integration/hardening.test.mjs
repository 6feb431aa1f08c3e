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
