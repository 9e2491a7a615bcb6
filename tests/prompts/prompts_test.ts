/**
 * The prompt service end to end on a real node: SDK agents connected over
 * the sealed gateway answer prompts, ask each other through the node, sign
 * their hops in SAGE mode; the node routes, verifies and logs.
 *
 * @module
 */
import assert from "node:assert/strict";
import { localGateway } from "../../gateway/mod.ts";
import { logStream, promptAgent, startPromptNode } from "./_node.ts";
import { generateAgentKey } from "../../sdk/mod.ts";

const tmp = () => Deno.makeTempDir({ prefix: "plexus-prompts-" });

type Log = { type: string; from: string; to: string; level: string };

Deno.test("prompts: a prompt is answered by a root agent, with the seed's shape and routing logs", async () => {
  await using node = await startPromptNode({ dir: await tmp() });
  const rootKey = await node.enrolled();
  await using _root = await promptAgent(
    node,
    rootKey,
    "prompt",
    (hop) =>
      `echo: ${hop.prompt} (${hop.scenario ?? "-"}, ${hop.metadata?.userId})`,
  );
  const r = await node.prompt(
    {
      prompt: "Book a room",
      sageEnabled: false,
      scenario: "hotel",
      metadata: { userId: "u1", sessionId: "s1" },
    },
  );
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.headers.get("x-cache"), "MISS");
  assert.equal(r.body.response, "echo: Book a room (hotel, u1)");
  assert.equal(r.body.sageVerification, undefined);
  const meta = r.body.metadata as Record<string, unknown>;
  assert.equal(meta.agent, rootKey.id);
  assert.equal(meta.cached, false);
  assert.equal(meta.scenario, "hotel");
  assert.match(String(meta.requestId), /^[0-9a-f-]{36}$/);
  assert.equal(typeof meta.processingTime, "number");
  assert.ok(!Number.isNaN(Date.parse(String(meta.timestamp))));
  const logs = r.body.logs as Log[];
  assert.deepEqual(
    logs.map((l) => [l.from, l.to, l.level]),
    [
      ["client", "node:a", "info"],
      ["node:a", "client", "warn"], // SAGE off: one warning per request
      ["node:a", rootKey.id, "info"],
      [rootKey.id, "node:a", "info"],
      ["node:a", "client", "info"],
    ],
  );
  for (const l of logs) assert.equal(l.type, "routing");

  // The same route under /api/v1.
  const again = await node.prompt(
    { prompt: "hi" },
    { "X-SAGE-Enabled": "false" },
    "/api/v1/prompts",
  );
  assert.equal(again.status, 200, JSON.stringify(again.body));
  assert.equal(again.body.response, "echo: hi (-, undefined)");
});

Deno.test("prompts: /health lists the prompt service and each root agent connected here with its latency", async () => {
  await using node = await startPromptNode({
    dir: await tmp(),
    config: { health: { cacheMs: 0 } },
  });
  const health = async () =>
    (await (await fetch(`${node.url}/health`)).json()) as {
      status: string;
      services: Record<
        string,
        { name: string; status: string; latency?: number; detail?: string }
      >;
    };
  const none = await health();
  assert.equal(none.services.prompts.status, "up");
  assert.equal(
    none.services.prompts.detail,
    "no root agent ('prompt') connected here",
  );
  assert.deepEqual(
    Object.keys(none.services).filter((s) => s.startsWith("prompts/")),
    [],
  );

  const [k1, k2] = [await node.enrolled(), await node.enrolled()];
  await using _r1 = await promptAgent(node, k1, "prompt", () => "one");
  await using _r2 = await promptAgent(node, k2, "prompt", () => "two");
  const before = await health();
  assert.equal(before.status, "healthy");
  assert.equal(
    before.services.prompts.detail,
    "2 root agents ('prompt') connected here",
  );
  for (const k of [k1, k2]) {
    assert.deepEqual(before.services[`prompts/root/${k.id}`], {
      name: `prompts/root/${k.id}`,
      status: "up",
      detail: "connected; no prompt answered yet",
    });
  }
  // Round robin: two prompts reach both agents; each then has a latency.
  for (const p of ["a", "b"]) {
    const r = await node.prompt({ prompt: p, sageEnabled: true });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  const after = await health();
  for (const k of [k1, k2]) {
    const e = after.services[`prompts/root/${k.id}`];
    assert.equal(e.status, "up");
    assert.ok(
      typeof e.latency === "number" && e.latency > 0,
      JSON.stringify(e),
    );
  }
});

Deno.test("prompts: routing steps appear live on WS /ws", async () => {
  await using node = await startPromptNode({
    dir: await tmp(),
    logLevel: "info",
  });
  const rootKey = await node.enrolled();
  await using _root = await promptAgent(node, rootKey, "prompt", () => "ok");
  const stream = logStream(node.url);
  await stream.open;
  try {
    const r = await node.prompt({ prompt: "ping", sageEnabled: false });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const requestId = (r.body.metadata as { requestId: string }).requestId;
    const seen = await stream.until((ms) => {
      const hops = ms.filter((m) =>
        m.type === "log" && m.payload.type === "routing" &&
        m.payload.requestId === requestId
      );
      return hops.length >= 5 ? hops : undefined;
    });
    const toRoot = seen.find((m) => m.payload.to === rootKey.id)!;
    assert.equal(toRoot.payload.from, "node:a");
    assert.equal(toRoot.payload.content, "ping");
    for (const k of ["timestamp", "messageId", "level"]) {
      assert.ok(k in toRoot.payload, k);
    }
  } finally {
    await stream.close();
  }
});

Deno.test("prompts: SAGE on, the root agent asks planning and ordering agents through the node; every hop is verified", async () => {
  await using node = await startPromptNode({ dir: await tmp() });
  const [rootKey, planKey, orderKey] = await Promise.all([
    node.enrolled(),
    node.enrolled(),
    node.enrolled(),
  ]);
  await using _plan = await promptAgent(
    node,
    planKey,
    "plan",
    (hop) => `plan for '${hop.prompt}' asked by ${hop.from === rootKey.id}`,
  );
  await using _order = await promptAgent(
    node,
    orderKey,
    "order",
    () => "order #1",
  );
  await using _root = await promptAgent(
    node,
    rootKey,
    "prompt",
    async (hop) => {
      const plan = await hop.ask("plan", { prompt: "plan a trip" });
      const order = await hop.ask("order", { prompt: "order it" });
      return `${plan}; ${order}`;
    },
  );
  const r = await node.prompt({ prompt: "trip", sageEnabled: true });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(
    r.body.response,
    "plan for 'plan a trip' asked by true; order #1",
  );
  const v = r.body.sageVerification as {
    verified: boolean;
    agentDid: string;
    signatureValid: boolean;
    chain: {
      hop: number;
      agent: string;
      from: string;
      capability: string;
      signatureValid: boolean;
      digest: string;
    }[];
  };
  assert.equal(v.verified, true);
  assert.equal(v.signatureValid, true);
  assert.equal(v.agentDid, rootKey.id);
  assert.deepEqual(
    v.chain.map((
      l,
    ) => [l.hop, l.capability, l.from, l.agent, l.signatureValid]),
    [
      [0, "prompt", "node:a", rootKey.id, true],
      [1, "plan", rootKey.id, planKey.id, true],
      [2, "order", rootKey.id, orderKey.id, true],
    ],
  );
  for (const l of v.chain) assert.equal(l.digest.length, 43);
  const logs = r.body.logs as Log[];
  assert.ok(logs.some((l) => l.from === rootKey.id && l.to === planKey.id));
  assert.ok(logs.some((l) => l.from === planKey.id && l.to === rootKey.id));
  assert.ok(logs.every((l) => l.level !== "warn"), "no SAGE-off warning");
});

Deno.test("prompts: a hop signed with a key other than the agent's enrolled one fails the request", async () => {
  await using node = await startPromptNode({ dir: await tmp() });
  const [rootKey, planKey] = await Promise.all([
    node.enrolled(),
    node.enrolled(),
  ]);
  const wrong = await generateAgentKey();
  await using _plan = await promptAgent(node, planKey, "plan", () => "plan", {
    signWith: Uint8Array.fromBase64(wrong.privateKey, {
      alphabet: "base64url",
    }),
  });
  await using _root = await promptAgent(
    node,
    rootKey,
    "prompt",
    async (hop) => {
      // A root agent that swallows the failed ask still cannot get an answer out.
      const plan = await hop.ask("plan", {}).catch(() => "no plan");
      return `answer with ${plan}`;
    },
  );
  const r = await node.prompt({ prompt: "trip" }, { "X-SAGE-Enabled": "true" });
  assert.equal(r.status, 502, JSON.stringify(r.body));
  const error = r.body.error as { code: string; message: string };
  assert.equal(error.code, "sage_verification_failed");
  assert.match(error.message, /hop 1/);
  assert.ok(error.message.includes(planKey.id), error.message);
  assert.match(
    error.message,
    /does not verify against the agent's enrolled key/,
  );
  assert.equal(
    await node.metric("plexus_prompts_verification_failures_total"),
    1,
  );

  // The root hop itself signed wrongly: refused the same way.
  const liarKey = await node.enrolled();
  await _root.close();
  await using _liar = await promptAgent(node, liarKey, "prompt", () => "x", {
    signWith: Uint8Array.fromBase64(wrong.privateKey, {
      alphabet: "base64url",
    }),
  });
  const r2 = await node.prompt({ prompt: "trip", sageEnabled: true });
  assert.equal(r2.status, 502, JSON.stringify(r2.body));
  assert.match((r2.body.error as { message: string }).message, /hop 0/);
});

Deno.test("prompts: a root agent that drops mid-request is retried on another one", async () => {
  await using node = await startPromptNode({ dir: await tmp() });
  const gateway = localGateway(node.handle.kernel);
  const [k1, k2] = await Promise.all([node.enrolled(), node.enrolled()]);
  const dropped: string[] = [];
  const handler = (id: string) => async () => {
    if (dropped.length === 0) {
      dropped.push(id);
      const conn = gateway.kickLocal(id, undefined, 4000, "test drop");
      await conn?.closed;
      return await new Promise<string>(() => {}); // never answers
    }
    return `answered by ${id}`;
  };
  await using _a1 = await promptAgent(node, k1, "prompt", handler(k1.id));
  await using _a2 = await promptAgent(node, k2, "prompt", handler(k2.id));
  const r = await node.prompt({ prompt: "hi", sageEnabled: false });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const other = dropped[0] === k1.id ? k2.id : k1.id;
  assert.equal(r.body.response, `answered by ${other}`);
  const logs = r.body.logs as (Log & { content: string })[];
  assert.ok(
    logs.some((l) =>
      l.from === dropped[0] && /root agent dropped/.test(l.content)
    ),
  );
});

Deno.test("prompts: no root agent connected → 503 with Retry-After; the permission is prompt:send", async () => {
  await using node = await startPromptNode({ dir: await tmp() });
  const r = await node.prompt({ prompt: "hi" });
  assert.equal(r.status, 503, JSON.stringify(r.body));
  assert.equal(r.headers.get("retry-after"), "5");
  assert.equal((r.body.error as { code: string }).code, "no_agent");

  const anon = await fetch(`${node.url}/send/prompt`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: '{"prompt":"hi"}',
  });
  assert.equal(anon.status, 401);
  await anon.body?.cancel();
  const viewer = await node.api("/send/prompt", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: '{"prompt":"hi"}',
  }, "viewer");
  assert.equal(viewer.status, 403);
  assert.match(await viewer.text(), /prompt:send/);
  // The anonymous route is off by default.
  const open = await fetch(`${node.url}/plugins/prompts/send`, {
    method: "POST",
    body: '{"prompt":"hi"}',
  });
  assert.equal(open.status, 404);
  await open.body?.cancel();
});

Deno.test("prompts: with anonymous on, /send/prompt answers callers without credentials; a caller with bad credentials is still refused", async () => {
  await using node = await startPromptNode({
    dir: await tmp(),
    prompts: { anonymous: true },
  });
  const rootKey = await node.enrolled();
  await using _root = await promptAgent(node, rootKey, "prompt", () => "hi");
  for (const path of ["/send/prompt", "/plugins/prompts/send"]) {
    const res = await fetch(`${node.url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"prompt":"hello","sageEnabled":false}',
    });
    assert.equal(res.status, 200, path);
    assert.equal((await res.json()).response, "hi");
  }
  const bad = await fetch(`${node.url}/send/prompt`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      authorization: "Bearer not-a-token",
    },
    body: '{"prompt":"hello"}',
  });
  assert.equal(bad.status, 401);
  await bad.body?.cancel();
  // /api/v1/prompts itself always needs a caller.
  const api = await fetch(`${node.url}/api/v1/prompts`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: '{"prompt":"hello"}',
  });
  assert.equal(api.status, 401);
  await api.body?.cancel();
});
