import assert from "node:assert/strict";
import { createLogger } from "../../core/observe/logger.ts";
import type { AgentGateway } from "../../gateway/gateway.ts";
import { promptsConfigSchema } from "./config.ts";
import { createDidResolvers } from "./did.ts";
import { createPromptService } from "./service.ts";
import { HopChecker } from "./hop_check.ts";
import { generateAgentKey } from "../../sdk/keys.ts";
import { signHop, verifyHopProof } from "../../sdk/sage.ts";
import { servedInProcess } from "./_served.ts";

/** The prompt service on node "n1" over `gateway`, defaults but `extra`. */
function serviceOver(
  gateway: AgentGateway,
  extra: Partial<Parameters<typeof createPromptService>[0]> = {},
) {
  return createPromptService({
    gateway,
    log: createLogger({ sinks: [] }),
    config: promptsConfigSchema.parse({}),
    nodeId: "n1",
    balancer: { name: "first", pick: (c) => c[0], report: () => {} },
    resolvers: createDidResolvers(),
    ...extra,
  });
}

/** Counts `abort` listeners added to any AbortSignal and not removed, until `restore`. */
function countAbortListeners() {
  const proto = AbortSignal.prototype as unknown as Record<string, unknown>;
  const live = new Set<unknown>();
  const add = EventTarget.prototype.addEventListener;
  const remove = EventTarget.prototype.removeEventListener;
  proto.addEventListener = function (
    this: EventTarget,
    type: string,
    fn: EventListener,
    o?: AddEventListenerOptions,
  ) {
    if (type === "abort") live.add(fn);
    return add.call(this, type, fn, o);
  };
  proto.removeEventListener = function (
    this: EventTarget,
    type: string,
    fn: EventListener,
    o?: EventListenerOptions,
  ) {
    if (type === "abort") live.delete(fn);
    return remove.call(this, type, fn, o);
  };
  return {
    live: () => live.size,
    restore: () => {
      delete proto.addEventListener;
      delete proto.removeEventListener;
    },
  };
}

Deno.test("prompt service: an answered prompt leaves no abort listener behind, and a later abort of the request asks nothing of the agents", async () => {
  const sent: unknown[] = [];
  const gateway = {
    capabilities: () => ({ prompt: ["a1"] }),
    request: (_agent: string, _topic: string, body: unknown) => {
      sent.push(body);
      return Promise.resolve({ response: "ok" });
    },
  } as unknown as AgentGateway;
  const service = serviceOver(gateway);
  const request = new AbortController();
  const counted = countAbortListeners();
  let response: string | undefined;
  try {
    response = (await service.answer(
      {
        prompt: "hi",
        sage: false,
        metadata: {},
        cacheKeyFields: [],
        noCache: false,
      },
      { signal: request.signal },
    )).response;
    // Deno aborts a request's signal after its response too.
    assert.equal(counted.live(), 0, "no abort listener left behind");
  } finally {
    counted.restore();
  }
  assert.equal(response, "ok");
  request.abort();
  assert.equal(sent.length, 1, "no cancel sent after the answer");
  assert.equal(service.active, 0);
});

Deno.test("prompt service: SAGE checks follow a re-keyed agent once its cached key is 5 s old; the same key read again still verifies", async () => {
  const first = await generateAgentKey();
  const second = await generateAgentKey();
  const seedOf = (k: { privateKey: string }) =>
    Uint8Array.fromBase64(k.privateKey, { alphabet: "base64url" });
  let enrolled = first.publicKey;
  let signer = seedOf(first);
  const gateway = {
    capabilities: () => ({ prompt: ["a1"] }),
    get: () => Promise.resolve({ publicKey: enrolled }),
    request: async (
      _agent: string,
      _topic: string,
      body: { requestId: string; hop: number },
    ) => {
      const fields = {
        requestId: body.requestId,
        hop: body.hop,
        content: "ok",
      };
      return { response: "ok", signature: await signHop(signer, fields) };
    },
  } as unknown as AgentGateway;
  const service = serviceOver(gateway);
  const ask = () =>
    service.answer({
      prompt: "hi",
      sage: true,
      metadata: {},
      cacheKeyFields: [],
      noCache: false,
    }, {});
  const realNow = Date.now;
  let skew = 0;
  Date.now = () => realNow() + skew;
  try {
    assert.equal((await ask()).sageVerification?.verified, true);
    // Past the key cache, the same key read again still verifies.
    skew += 6_000;
    assert.equal((await ask()).sageVerification?.verified, true);
    // Re-keyed: within the cache the old key is still the one checked.
    enrolled = second.publicKey;
    signer = seedOf(second);
    await assert.rejects(ask(), /SAGE verification failed/);
    skew += 6_000;
    assert.equal((await ask()).sageVerification?.verified, true);
    // The old key's signatures now fail.
    signer = seedOf(first);
    await assert.rejects(ask(), /SAGE verification failed/);
  } finally {
    Date.now = realNow;
  }
});

Deno.test("prompt service: a SAGE answer is verified on either crypto path, and one signed by another key fails the prompt on both", async () => {
  const agentKey = await generateAgentKey();
  const other = await generateAgentKey();
  const seedOf = (k: { privateKey: string }) =>
    Uint8Array.fromBase64(k.privateKey, { alphabet: "base64url" });
  let signer = seedOf(agentKey);
  const gateway = {
    capabilities: () => ({ prompt: ["a1"] }),
    get: () => Promise.resolve({ publicKey: agentKey.publicKey }),
    request: async (
      _agent: string,
      _topic: string,
      body: { requestId: string; hop: number },
    ) => ({
      response: "ok",
      signature: await signHop(signer, {
        requestId: body.requestId,
        hop: body.hop,
        content: "ok",
      }),
    }),
  } as unknown as AgentGateway;
  for (const asyncAt of [Infinity, 1]) {
    const checks = new HopChecker(asyncAt);
    const service = serviceOver(gateway, { checks });
    const ask = () =>
      service.answer({
        prompt: "hi",
        sage: true,
        metadata: {},
        cacheKeyFields: [],
        noCache: false,
      }, {});
    signer = seedOf(agentKey);
    assert.equal((await ask()).sageVerification?.verified, true);
    signer = seedOf(other);
    await assert.rejects(ask(), /SAGE verification failed/);
    assert.equal(checks.pending, 0, "every begun check ended");
    assert.deepEqual(
      checks.made,
      asyncAt === 1 ? { sync: 0, web: 2 } : { sync: 2, web: 0 },
    );
  }
});

Deno.test("prompt service: SAGE answers an agent signed as one batch carry their proofs in the chain, which a client verifies with the agent's public key; an answer altered after signing fails", async () => {
  const agentKey = await generateAgentKey();
  const seed = Uint8Array.fromBase64(agentKey.privateKey, {
    alphabet: "base64url",
  });
  const handler = await servedInProcess((hop) => `answer to ${hop.prompt}`, {
    key: seed,
  });
  let alter = "";
  const gateway = {
    capabilities: () => ({ prompt: ["a1"] }),
    get: () => Promise.resolve({ publicKey: agentKey.publicKey }),
    request: async (_agent: string, _topic: string, body: unknown) => {
      const answer = await handler({ payload: body }) as { response: string };
      return answer.response.endsWith(alter) && alter
        ? { ...answer, response: answer.response + "!" }
        : answer;
    },
  } as unknown as AgentGateway;
  const service = serviceOver(gateway);
  const ask = (prompt: string) =>
    service.answer({
      prompt,
      sage: true,
      metadata: {},
      cacheKeyFields: [],
      noCache: false,
    }, {});
  // Eight at once: their hops reach the agent together and are signed as one batch.
  const answers = await Promise.all(
    Array.from({ length: 8 }, (_, i) => ask(`p${i}`)),
  );
  const raw = Uint8Array.fromBase64(agentKey.publicKey, {
    alphabet: "base64url",
  });
  const signatures = new Set<string>();
  for (const a of answers) {
    const v = a.sageVerification!;
    assert.equal(v.verified, true);
    const [link] = v.chain;
    assert.ok(link.proof, "a batch proof in the chain");
    signatures.add(link.signature);
    // What a client does from the docs: the answer's text, the request id
    // and hop, the signature and proof, the agent's enrolled public key.
    assert.equal(
      await verifyHopProof(
        raw,
        { requestId: a.metadata.requestId, hop: link.hop, content: a.response },
        link.signature,
        link.proof!,
      ),
      true,
    );
  }
  assert.equal(signatures.size, 1, "one signature for the batch");
  // One of a batch altered after its signature: that prompt fails, the
  // others of the batch still verify.
  alter = "p3";
  const results = await Promise.allSettled(
    Array.from({ length: 8 }, (_, i) => ask(`p${i}`)),
  );
  const failed = results.flatMap((r, i) => r.status === "rejected" ? [i] : []);
  assert.deepEqual(failed, [3]);
  assert.match(
    String((results[3] as PromiseRejectedResult).reason),
    /SAGE verification failed/,
  );
});
