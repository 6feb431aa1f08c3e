// Real client libraries, unchanged, through the gateway, against both providers (mockllm
// speaking OpenAI for lambda and Snowflake Cortex for cortex): the official openai SDK
// (Responses stream and non-stream with a function-tool round trip, previous_response_id,
// embeddings float and base64, models.retrieve), the Vercel AI SDK's default provider
// (generateText, streamText, a two-step tool call, embed), LangChain JS (ChatOpenAI with a
// ToolMessage round trip, OpenAIEmbeddings), and the Anthropic SDK (messages.create and
// messages.stream, tools; Claude on Cortex forwarded as it is, other models translated). Also
// json=1 structured output end to end, the upstream's X-Request-Id / User-Agent, and the
// response model naming the public model.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { generateText, streamText, embed, embedMany, tool, stepCountIs, jsonSchema } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';
import { createAnthropic } from '@ai-sdk/anthropic';
import { ChatOpenAI, OpenAIEmbeddings } from '@langchain/openai';
import { HumanMessage, SystemMessage } from '@langchain/core/messages';
import { tool as lcTool } from '@langchain/core/tools';
import { z } from 'zod';
import { startMock, startGateway, mockStats, makePat } from './lib.mjs';

const PAT = makePat(30 * 86400);
const LAMBDA = 'lambda/llama3.1-8b-instruct';
const CORTEX = 'cortex/llama3.1-70b';
const CLAUDE = 'cortex/claude-sonnet-4-5';
const CHAT_MODELS = [LAMBDA, CORTEX];
const EMBED = { lambda: 'lambda/bge-m3', cortex: 'cortex/snowflake-arctic-embed-m-v1.5' };
const EMBED_DIMS = 24;

let mock;     // both dialects; Cortex requires PAT
let proxy;    // records what the gateway sends upstream, forwards to mock
const seen = []; // {url, headers, body}
let gw;

function startProxy(target) {
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      if (!/\/models$/.test(req.url)) seen.push({ url: req.url, headers: { ...req.headers }, body });
      const up = http.request({ host: '127.0.0.1', port: target.port, path: req.url, method: req.method,
        headers: req.headers }, (ur) => {
        const h = { ...ur.headers };
        delete h.connection; delete h['transfer-encoding']; delete h['keep-alive'];
        res.writeHead(ur.statusCode, h);
        ur.pipe(res);
      });
      up.on('error', () => res.destroy());
      up.end(body);
    });
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => {
    srv.url = `http://127.0.0.1:${srv.address().port}`;
    resolve(srv);
  }));
}

before(async () => {
  mock = await startMock(['--snowflake-token', PAT, '--embed-dims', String(EMBED_DIMS), '--tokens', '12']);
  proxy = await startProxy(mock);
  gw = await startGateway({
    config: {
      providers: {
        lambda: { kind: 'openai', base_url: `${proxy.url}/v1` },
        cortex: { account: 'myorg-myacct', user: 'svc', pat: PAT, base_url: proxy.url },
      },
    },
  });
});

after(async () => {
  await gw?.stopClean();
  proxy?.close();
  await mock?.stop();
});

const oa = () => new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'client-key', maxRetries: 0, timeout: 20000 });
const weatherParams = {
  type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string' } }, required: ['city'],
};
const lastSeen = (re) => [...seen].reverse().find((s) => re.test(s.url));

// ---- openai SDK: Responses ------------------------------------------------------------------

for (const model of CHAT_MODELS) {
  test(`openai responses.create, not streamed (${model})`, async () => {
    const r = await oa().responses.create({ model, instructions: 'Be brief.', input: 'Say hello' });
    assert.equal(r.object, 'response');
    assert.equal(r.status, 'completed');
    assert.equal(r.model, model);
    assert.match(r.id, /^resp_/);
    assert.equal(r.output.length, 1);
    assert.equal(r.output[0].type, 'message');
    assert.match(r.output_text, /^The quick brown fox/);
    assert.ok(r.usage.input_tokens > 0);
    assert.equal(r.usage.output_tokens, 12);
    assert.equal(r.usage.total_tokens, r.usage.input_tokens + 12);
  });

  test(`openai responses.create, streamed: the event sequence (${model})`, async () => {
    const stream = await oa().responses.create({ model, input: [{ role: 'user', content: 'Say hello' }], stream: true });
    const types = [];
    let seq = -1;
    let text = '';
    let final;
    for await (const ev of stream) {
      types.push(ev.type);
      assert.equal(ev.sequence_number, seq + 1, 'sequence numbers count up from 0');
      seq = ev.sequence_number;
      if (ev.type === 'response.output_text.delta') text += ev.delta;
      if (ev.type === 'response.completed') final = ev.response;
    }
    const uniq = types.filter((t, i) => t !== types[i - 1]);
    assert.deepEqual(uniq, ['response.created', 'response.in_progress', 'response.output_item.added',
      'response.content_part.added', 'response.output_text.delta', 'response.output_text.done',
      'response.content_part.done', 'response.output_item.done', 'response.completed']);
    assert.equal(types.filter((t) => t === 'response.output_text.delta').length, 12);
    assert.equal(final.output[0].content[0].text, text);
    assert.equal(final.usage.output_tokens, 12);
    assert.equal(final.status, 'completed');
  });

  test(`openai responses: function-tool round trip, by input items and by previous_response_id (${model})`, async () => {
    const tools = [{ type: 'function', name: 'get_weather', description: 'Weather', parameters: weatherParams }];
    const first = await oa().responses.create({ model, tools, input: '[mock:tool=1] Weather in Paris?' });
    const call = first.output.find((o) => o.type === 'function_call');
    assert.ok(call, JSON.stringify(first.output));
    assert.equal(call.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.arguments), { city: 'Paris', unit: 'celsius' });
    assert.match(call.id, /^fc_/);
    assert.ok(call.call_id);
    // The whole conversation as input items.
    const second = await oa().responses.create({
      model, tools,
      input: [{ role: 'user', content: '[mock:tool=1] Weather in Paris?' }, call,
        { type: 'function_call_output', call_id: call.call_id, output: '{"tempC":21}' }],
    });
    assert.equal(second.output_text, 'Tool result received: {"tempC":21}');
    // Only the tool output, the rest from the gateway's store.
    const third = await oa().responses.create({
      model, tools, previous_response_id: first.id,
      input: [{ type: 'function_call_output', call_id: call.call_id, output: 'sunny' }],
    });
    assert.equal(third.output_text, 'Tool result received: sunny');
    // Streamed, the call arrives as argument deltas.
    const s = await oa().responses.create({ model, tools, input: '[mock:tool=1] Weather?', stream: true });
    let args = '';
    let done;
    for await (const ev of s) {
      if (ev.type === 'response.function_call_arguments.delta') args += ev.delta;
      if (ev.type === 'response.output_item.done' && ev.item.type === 'function_call') done = ev.item;
    }
    assert.deepEqual(JSON.parse(args), { city: 'Paris', unit: 'celsius' });
    assert.equal(done.arguments, args);
  });
}

test('openai responses: unknown previous_response_id, built-in tools and bad input are clear 400s', async () => {
  await assert.rejects(oa().responses.create({ model: LAMBDA, previous_response_id: 'resp_nope', input: 'x' }),
    (e) => e.status === 400 && /previous response 'resp_nope' is not known.*send the whole conversation/.test(e.message));
  await assert.rejects(oa().responses.create({ model: LAMBDA, tools: [{ type: 'web_search' }], input: 'x' }),
    (e) => e.status === 400 && /built-in tool 'web_search'/.test(e.message));
  await assert.rejects(oa().responses.create({ model: LAMBDA, input: [{ type: 'item_reference', id: 'msg_x' }] }),
    (e) => e.status === 400 && /item 'msg_x' is not known/.test(e.message));
  await assert.rejects(oa().responses.create({ model: EMBED.cortex, input: 'x' }),
    (e) => e.status === 400 && /embedding model/.test(e.message));
});

test('openai responses: store false is not kept; max_output_tokens gives an incomplete response', async () => {
  const r = await oa().responses.create({ model: LAMBDA, input: 'hi', store: false, max_output_tokens: 3 });
  assert.equal(r.status, 'incomplete');
  assert.equal(r.incomplete_details.reason, 'max_output_tokens');
  assert.equal(r.usage.output_tokens, 3);
  await assert.rejects(oa().responses.create({ model: LAMBDA, previous_response_id: r.id, input: 'more' }),
    (e) => e.status === 400);
});

test('openai responses: an upstream failure before output is an HTTP error; after, response.failed', async () => {
  await assert.rejects(oa().responses.create({ model: LAMBDA, input: '[mock:status=400] hi' }),
    (e) => e.status === 400);
  // As OpenAI does: response.failed (status "failed", with the error), then an error event.
  const s = await oa().responses.create({ model: LAMBDA, input: '[mock:midstream_error=3] hi', stream: true });
  const evs = [];
  for await (const ev of s) evs.push(ev);
  assert.ok(evs.some((e) => e.type === 'response.output_text.delta'));
  const [failed, err] = evs.slice(-2);
  assert.equal(failed.type, 'response.failed');
  assert.equal(failed.response.status, 'failed');
  assert.match(failed.response.error.message, /mock/);
  assert.equal(err.type, 'error');
  assert.ok(err.code && err.message);
});

// ---- openai SDK: embeddings and models --------------------------------------------------------

for (const [prov, model] of Object.entries(EMBED)) {
  test(`openai embeddings.create float and base64 (${prov})`, async () => {
    const f = await oa().embeddings.create({ model, input: ['hello world', 'good night'], encoding_format: 'float' });
    assert.equal(f.object, 'list');
    assert.equal(f.model, model);
    assert.equal(f.data.length, 2);
    assert.equal(f.data[1].index, 1);
    assert.equal(f.data[0].embedding.length, EMBED_DIMS);
    const norm = Math.hypot(...f.data[0].embedding);
    assert.ok(Math.abs(norm - 1) < 1e-3, `unit vector (${norm})`);
    assert.ok(f.usage.prompt_tokens > 0);
    assert.equal(f.usage.total_tokens, f.usage.prompt_tokens);
    // The SDK's default: base64, decoded by the SDK into the same floats.
    const b = await oa().embeddings.create({ model, input: 'hello world' });
    assert.equal(b.data[0].embedding.length, EMBED_DIMS);
    b.data[0].embedding.forEach((v, i) => assert.ok(Math.abs(v - f.data[0].embedding[i]) < 1e-6));
    // dimensions: shortened and renormalised.
    const d = await oa().embeddings.create({ model, input: 'hello world', dimensions: 8, encoding_format: 'float' });
    assert.equal(d.data[0].embedding.length, 8);
    assert.ok(Math.abs(Math.hypot(...d.data[0].embedding) - 1) < 1e-3);
  });
}

test('embeddings reach the right upstream in its own shape', async () => {
  await oa().embeddings.create({ model: EMBED.cortex, input: ['a b', 'c'], encoding_format: 'float' });
  const cx = lastSeen(/inference:embed$/);
  assert.deepEqual(JSON.parse(cx.body), { model: 'snowflake-arctic-embed-m-v1.5', text: ['a b', 'c'] });
  assert.equal(cx.headers.authorization, `Bearer ${PAT}`);
  await oa().embeddings.create({ model: EMBED.lambda, input: 'a', encoding_format: 'float' });
  const la = lastSeen(/\/v1\/embeddings$/);
  assert.equal(JSON.parse(la.body).model, 'bge-m3');
  await assert.rejects(oa().embeddings.create({ model: CORTEX, input: 'x' }),
    (e) => e.status === 400 && /chat model, not an embedding model/.test(e.message));
  await assert.rejects(oa().embeddings.create({ model: 'auto', input: 'x' }), (e) => e.status === 400);
});

test('openai models.retrieve: ids with slashes; unknown is 404 model_not_found', async () => {
  for (const id of [LAMBDA, CORTEX, EMBED.cortex]) {
    const m = await oa().models.retrieve(id);
    assert.equal(m.id, id);
    assert.equal(m.object, 'model');
  }
  const enc = await fetch(`${gw.url}/v1/models/${encodeURIComponent(CORTEX)}`);
  assert.equal((await enc.json()).id, CORTEX);
  await assert.rejects(oa().models.retrieve('cortex/nope'),
    (e) => e.status === 404 && e.code === 'model_not_found');
});

// ---- structured output (json=1) ----------------------------------------------------------------

const personSchema = {
  type: 'object',
  properties: { name: { type: 'string' }, age: { type: 'integer', minimum: 0 }, tags: { type: 'array', items: { type: 'string' } } },
  required: ['name', 'age', 'tags'],
  additionalProperties: false,
};
const checkPerson = (text) => {
  const p = JSON.parse(text);
  assert.deepEqual(Object.keys(p).sort(), ['age', 'name', 'tags']);
  assert.equal(typeof p.name, 'string');
  assert.ok(Number.isInteger(p.age) && p.age >= 0);
  assert.ok(Array.isArray(p.tags));
};

for (const model of CHAT_MODELS) {
  test(`structured output end to end: chat response_format and responses text.format (${model})`, async () => {
    const c = await oa().chat.completions.create({
      model, messages: [{ role: 'user', content: '[mock:json=1] a person' }],
      response_format: { type: 'json_schema', json_schema: { name: 'person', schema: personSchema, strict: true } },
    });
    checkPerson(c.choices[0].message.content);
    const r = await oa().responses.create({
      model, input: '[mock:json=1] a person',
      text: { format: { type: 'json_schema', name: 'person', schema: personSchema, strict: true } },
    });
    checkPerson(r.output_text);
    const s = await oa().responses.create({
      model, input: '[mock:json=1] a person', stream: true,
      text: { format: { type: 'json_schema', name: 'person', schema: personSchema } },
    });
    let text = '';
    for await (const ev of s) if (ev.type === 'response.output_text.delta') text += ev.delta;
    checkPerson(text);
  });
}

// ---- Vercel AI SDK, default provider (Responses API) -----------------------------------------

const aiProvider = () => createOpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'client-key' });
const aiWeather = tool({
  description: 'Weather for a city',
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => ({ city, tempC: 21 }),
});

for (const model of CHAT_MODELS) {
  test(`AI SDK default provider: generateText, streamText, two-step tool call (${model})`, async () => {
    const p = aiProvider();
    const g = await generateText({ model: p(model), system: 'Be brief.', prompt: 'Say hello', maxRetries: 0 });
    assert.match(g.text, /^The quick brown fox/);
    assert.equal(g.finishReason, 'stop');
    assert.equal(g.usage.outputTokens, 12);
    const s = streamText({ model: p(model), prompt: 'Say hello', maxRetries: 0, onError: () => {} });
    let acc = '';
    for await (const t of s.textStream) acc += t;
    assert.match(acc, /^The quick brown fox/);
    assert.equal((await s.usage).outputTokens, 12);
    assert.equal(await s.finishReason, 'stop');
    // Step 1: the model calls the tool; step 2: it answers from the result.
    const t = await generateText({ model: p(model), prompt: '[mock:tool=1] Weather in Paris?',
      tools: { get_weather: aiWeather }, stopWhen: stepCountIs(3), maxRetries: 0 });
    assert.equal(t.steps.length, 2);
    assert.equal(t.steps[0].toolCalls[0].toolName, 'get_weather');
    assert.deepEqual(t.steps[0].toolResults[0].output, { city: 'Paris', tempC: 21 });
    assert.equal(t.text, 'Tool result received: {"city":"Paris","tempC":21}');
    const st = streamText({ model: p(model), prompt: '[mock:tool=1] Weather in Paris?',
      tools: { get_weather: aiWeather }, stopWhen: stepCountIs(3), maxRetries: 0, onError: () => {} });
    let acc2 = '';
    for await (const x of st.textStream) acc2 += x;
    assert.equal((await st.steps).length, 2);
    assert.match(acc2, /Tool result received: \{"city":"Paris","tempC":21\}$/);
  });
}

for (const [prov, model] of Object.entries(EMBED)) {
  test(`AI SDK embed and embedMany (${prov})`, async () => {
    const p = aiProvider();
    const e = await embed({ model: p.textEmbeddingModel(model), value: 'hello world', maxRetries: 0 });
    assert.equal(e.embedding.length, EMBED_DIMS);
    assert.ok(e.usage.tokens > 0);
    const m = await embedMany({ model: p.textEmbeddingModel(model), values: ['a', 'b c'], maxRetries: 0 });
    assert.equal(m.embeddings.length, 2);
    assert.equal(m.embeddings[1].length, EMBED_DIMS);
  });
}

// ---- LangChain JS -----------------------------------------------------------------------------

for (const model of CHAT_MODELS) {
  test(`LangChain ChatOpenAI: invoke, stream, ToolMessage round trip (${model})`, async () => {
    const llm = new ChatOpenAI({ configuration: { baseURL: `${gw.url}/v1` }, apiKey: 'client-key', model, maxRetries: 0 });
    const r = await llm.invoke([new SystemMessage('Be brief.'), new HumanMessage('Say hello')]);
    assert.match(r.content, /^The quick brown fox/);
    assert.equal(r.usage_metadata.output_tokens, 12);
    let acc = '';
    for await (const c of await llm.stream('Say hello')) acc += c.content;
    assert.match(acc, /^The quick brown fox/);
    const weather = lcTool(async ({ city }) => JSON.stringify({ city, tempC: 21 }),
      { name: 'get_weather', description: 'Weather for a city', schema: z.object({ city: z.string() }) });
    const withTools = llm.bindTools([weather]);
    const msgs = [new HumanMessage('[mock:tool=1] Weather in Paris?')];
    const ai = await withTools.invoke(msgs);
    assert.equal(ai.tool_calls.length, 1);
    assert.deepEqual(ai.tool_calls[0].args, { city: 'Paris', unit: 'celsius' });
    msgs.push(ai);
    for (const tc of ai.tool_calls) msgs.push(await weather.invoke(tc));
    const fin = await withTools.invoke(msgs);
    assert.equal(fin.content, 'Tool result received: {"city":"Paris","tempC":21}');
  });
}

test('the Cortex round trip sends tool_use and tool_results content as the specification has them', async () => {
  const llm = new ChatOpenAI({ configuration: { baseURL: `${gw.url}/v1` }, apiKey: 'client-key', model: CORTEX, maxRetries: 0 });
  const weather = lcTool(async () => 'sunny', { name: 'get_weather', description: 'Weather', schema: z.object({ city: z.string() }) });
  const msgs = [new HumanMessage('[mock:tool=1] Weather?')];
  const ai = await llm.bindTools([weather]).invoke(msgs);
  msgs.push(ai, await weather.invoke(ai.tool_calls[0]));
  await llm.bindTools([weather]).invoke(msgs);
  const body = JSON.parse(lastSeen(/inference:complete$/).body);
  const [user, assistant, results] = body.messages;
  assert.equal(user.role, 'user');
  const use = assistant.content_list.find((c) => c.type === 'tool_use');
  assert.deepEqual(use.tool_use, { tool_use_id: ai.tool_calls[0].id, name: 'get_weather', input: { city: 'Paris', unit: 'celsius' } });
  assert.equal(results.role, 'user');
  assert.deepEqual(results.content_list, [{ type: 'tool_results', tool_results: {
    tool_use_id: ai.tool_calls[0].id, name: 'get_weather', content: [{ type: 'text', text: 'sunny' }] } }]);
});

for (const [prov, model] of Object.entries(EMBED)) {
  test(`LangChain OpenAIEmbeddings (${prov})`, async () => {
    const emb = new OpenAIEmbeddings({ configuration: { baseURL: `${gw.url}/v1` }, apiKey: 'client-key', model, maxRetries: 0 });
    const q = await emb.embedQuery('hello world');
    assert.equal(q.length, EMBED_DIMS);
    const docs = await emb.embedDocuments(['a', 'b', 'c']);
    assert.equal(docs.length, 3);
    assert.ok(docs.every((d) => d.length === EMBED_DIMS));
  });
}

// ---- Anthropic SDK ---------------------------------------------------------------------------

const anth = () => new Anthropic({ baseURL: gw.url, apiKey: 'client-key', maxRetries: 0, timeout: 20000 });
const anthTools = [{ name: 'get_weather', description: 'Weather for a city', input_schema: weatherParams }];

for (const model of [CLAUDE, LAMBDA, CORTEX]) {
  const how = model === CLAUDE ? 'forwarded as it is' : 'translated';
  test(`Anthropic SDK messages.create and messages.stream (${model}, ${how})`, async () => {
    const before = (await mockStats(mock)).messages_requests;
    const m = await anth().messages.create({ model, max_tokens: 64, system: 'Be brief.',
      messages: [{ role: 'user', content: 'Say hello' }] });
    assert.equal(m.type, 'message');
    assert.equal(m.role, 'assistant');
    assert.equal(m.model, model);
    assert.equal(m.content[0].type, 'text');
    assert.match(m.content[0].text, /^The quick brown fox/);
    assert.equal(m.stop_reason, 'end_turn');
    assert.ok(m.usage.input_tokens > 0);
    assert.equal(m.usage.output_tokens, 12);
    const stream = anth().messages.stream({ model, max_tokens: 64, messages: [{ role: 'user', content: 'Say hello' }] });
    let acc = '';
    const events = [];
    stream.on('text', (t) => { acc += t; });
    stream.on('streamEvent', (e) => events.push(e.type));
    const fm = await stream.finalMessage();
    assert.match(acc, /^The quick brown fox/);
    assert.equal(fm.content[0].text, acc);
    assert.equal(fm.model, model);
    assert.equal(fm.usage.output_tokens, 12);
    assert.equal(fm.stop_reason, 'end_turn');
    const uniq = events.filter((t, i) => t !== events[i - 1] && t !== 'ping');
    assert.deepEqual(uniq, ['message_start', 'content_block_start', 'content_block_delta', 'content_block_stop',
      'message_delta', 'message_stop']);
    const after = (await mockStats(mock)).messages_requests;
    assert.equal(after - before, model === CLAUDE ? 2 : 0, 'Claude on Cortex reaches /v1/messages, others do not');
    const m2 = await anth().messages.create({ model, max_tokens: 3, messages: [{ role: 'user', content: 'Say hello' }] });
    assert.equal(m2.stop_reason, 'max_tokens');
    assert.equal(m2.usage.output_tokens, 3);
  });

  test(`Anthropic SDK tool round trip, not streamed and streamed (${model})`, async () => {
    const msgs = [{ role: 'user', content: '[mock:tool=1] Weather in Paris?' }];
    const m = await anth().messages.create({ model, max_tokens: 64, tools: anthTools, messages: msgs });
    assert.equal(m.stop_reason, 'tool_use');
    const tu = m.content.find((c) => c.type === 'tool_use');
    assert.equal(tu.name, 'get_weather');
    assert.deepEqual(tu.input, { city: 'Paris', unit: 'celsius' });
    msgs.push({ role: 'assistant', content: m.content });
    msgs.push({ role: 'user', content: [{ type: 'tool_result', tool_use_id: tu.id, content: '{"tempC":21}' }] });
    const fin = await anth().messages.create({ model, max_tokens: 64, tools: anthTools, messages: msgs });
    assert.equal(fin.content[0].text, 'Tool result received: {"tempC":21}');
    const s = anth().messages.stream({ model, max_tokens: 64, tools: anthTools,
      messages: [{ role: 'user', content: '[mock:tool=1] Weather?' }] });
    const fm = await s.finalMessage();
    const stu = fm.content.find((c) => c.type === 'tool_use');
    assert.deepEqual(stu.input, { city: 'Paris', unit: 'celsius' });
    assert.equal(fm.stop_reason, 'tool_use');
  });

  test(`Anthropic SDK structured output (output_config.format) and errors in Anthropic's shape (${model})`, async () => {
    const m = await anth().messages.create({ model, max_tokens: 256,
      messages: [{ role: 'user', content: '[mock:json=1] a person' }],
      output_config: { format: { type: 'json_schema', schema: personSchema } } });
    checkPerson(m.content[0].text);
    await assert.rejects(anth().messages.create({ model, max_tokens: 8, messages: [{ role: 'user', content: '[mock:status=429] hi' }] }),
      (e) => e instanceof Anthropic.RateLimitError && e.error.type === 'error' && e.error.error.type === 'rate_limit_error');
    const s = anth().messages.stream({ model, max_tokens: 64, messages: [{ role: 'user', content: '[mock:midstream_error=3] hi' }] });
    await assert.rejects(s.finalMessage(), (e) => e instanceof Anthropic.APIError);
  });
}

test('Anthropic SDK: request errors are 400 invalid_request_error; unknown model 404 not_found_error', async () => {
  await assert.rejects(anth().messages.create({ model: LAMBDA, messages: [{ role: 'user', content: 'hi' }] }),
    (e) => e.status === 400 && e.error.error.type === 'invalid_request_error' && /max_tokens/.test(e.message));
  await assert.rejects(anth().messages.create({ model: 'nope/x', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] }),
    (e) => e.status === 404 && e.error.error.type === 'not_found_error');
  await assert.rejects(anth().messages.create({ model: LAMBDA, max_tokens: 8,
    tools: [{ type: 'web_search_20250305', name: 'web_search' }], messages: [{ role: 'user', content: 'hi' }] }),
  (e) => e.status === 400 && /server tool/.test(e.message));
});

test('Claude on Cortex: the body goes as it is, with the Snowflake model name and the gateway\'s token', async () => {
  await anth().messages.create({ model: CLAUDE, max_tokens: 16, top_k: 5, metadata: { user_id: 'u1' },
    messages: [{ role: 'user', content: [{ type: 'text', text: 'hi', cache_control: { type: 'ephemeral' } }] }] });
  const up = lastSeen(/\/api\/v2\/cortex\/v1\/messages$/);
  const body = JSON.parse(up.body);
  assert.equal(body.model, 'claude-sonnet-4-5');
  assert.equal(body.top_k, 5);
  assert.deepEqual(body.metadata, { user_id: 'u1' });
  assert.deepEqual(body.messages[0].content[0].cache_control, { type: 'ephemeral' });
  assert.equal(up.headers.authorization, `Bearer ${PAT}`);
  assert.equal(up.headers['x-api-key'], undefined, 'the client key is not forwarded');
  assert.equal(up.headers['anthropic-version'], '2023-06-01');
});

test('AI SDK Anthropic provider (x-api-key, base URL with /v1) against both kinds of model', async () => {
  const p = createAnthropic({ baseURL: `${gw.url}/v1`, apiKey: 'client-key' });
  for (const model of [CLAUDE, LAMBDA]) {
    const g = await generateText({ model: p(model), prompt: 'Say hello', maxRetries: 0 });
    assert.match(g.text, /^The quick brown fox/);
    const t = await generateText({ model: p(model), prompt: '[mock:tool=1] Weather in Paris?',
      tools: { get_weather: tool({ description: 'Weather', inputSchema: jsonSchema(weatherParams),
        execute: async () => ({ tempC: 21 }) }) }, stopWhen: stepCountIs(3), maxRetries: 0 });
    assert.equal(t.steps.length, 2);
    assert.equal(t.text, 'Tool result received: {"tempC":21}');
  }
});

// ---- what the upstream sees, what the client sees ------------------------------------------

test('upstream requests carry X-Request-Id (the client\'s) and the gateway\'s User-Agent', async () => {
  for (const model of CHAT_MODELS) {
    const rid = `sdk-test-${model.replace('/', '-')}-1`;
    const r = await oa().chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }] },
      { headers: { 'x-request-id': rid } });
    assert.ok(r.id);
    const up = [...seen].reverse().find((s) => s.headers['x-request-id'] === rid);
    assert.ok(up, `an upstream request with X-Request-Id ${rid}`);
    assert.match(up.headers['user-agent'], /^sophia-gateway\/\d+\.\d+\.\d+$/);
  }
});

test('the response model is the public name for every provider', async () => {
  for (const model of CHAT_MODELS) {
    const c = await oa().chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(c.model, model);
    const s = await oa().chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }], stream: true });
    for await (const ch of s) assert.equal(ch.model, model);
  }
});
