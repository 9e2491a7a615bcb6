/**
 * The agent SDK (`connectAgent`/`AgentClient` from
 * sdk/mod.ts) end to end against the real gateway over
 * loopback: nodes started in-process (`startTestNode`) and as real
 * `main.ts` processes, backend sends through the HTTP API, plugins'
 * views through the router and the `gateway:agents` capability.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { Envelope } from "../../core/envelope.ts";
import type { Router } from "../../core/router.ts";
import { DurableQueue } from "../../core/state/queue.ts";
import {
  type AgentGateway,
  GatewayRequestError,
} from "../../gateway/gateway.ts";
import {
  AgentError,
  type AgentEvents,
  CloseCode,
  connectAgent,
  generateAgentKey,
  HandshakeError,
} from "../../sdk/mod.ts";
import { outboxQueueName } from "../../gateway/outbox.ts";
import {
  deadline,
  EXIT_TIMEOUT_MS,
  type PlexusProcess,
  poll,
  startPlexus,
  writeConfig,
} from "../integration/_process.ts";
import { startTestNode, type TestNode, until } from "./_node.ts";
import {
  enrolledKey,
  enrolOn,
  freePort,
  Inbox,
  LineReader,
  metricValue,
  postTo,
  runMain,
  sdkClient,
  seedOf,
  spawnMain,
  TEST_BACKOFF,
} from "./_sdk_helpers.ts";

async function withNode(
  gateway: Record<string, unknown>,
  fn: (n: TestNode) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "plexus-sdk-" });
  const n = await startTestNode({ dir, gateway });
  try {
    await fn(n);
  } finally {
    await n.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function router(n: TestNode): Router {
  return n.handle.kernel.get("router:local");
}

function isAgentError(code: string) {
  return (err: unknown) => {
    assert.ok(err instanceof AgentError, String(err));
    assert.equal(err.code, code, err.message);
    return true;
  };
}

Deno.test("sdk: a backend send on 'policies' reaches the subscribed SDK handler once ('sent'); after the SDK's ack the node's queue is empty", async () => {
  await withNode({}, async (n) => {
    const key = await enrolledKey(n);
    await using agent = await connectAgent({
      url: n.url,
      id: key.id,
      privateKey: seedOf(key),
      backoff: TEST_BACKOFF,
    });
    const inbox = new Inbox();
    const sub = await agent.subscribe("policies", inbox.handler);
    assert.equal(sub.channel, `backend.${key.id}.policies`);
    const r = await n.post(`/api/v1/agents/${key.id}/send`, {
      channel: "policies",
      message: { v: 2 },
      message_type: "policy",
      priority: 7,
      correlation_id: "corr-1",
    });
    assert.equal(r.status, 200);
    assert.equal(r.body.status, "sent");
    const [m] = await inbox.waitFor(1);
    assert.equal(m.id, r.body.message_id);
    assert.equal(m.channel, `backend.${key.id}.policies`);
    assert.equal(m.name, "policies");
    assert.deepEqual(m.payload, { v: 2 });
    assert.equal(m.type, "policy");
    assert.equal(m.priority, 7);
    assert.equal(m.correlationId, "corr-1");
    assert.equal(m.signed, false);
    // The SDK's ack settles the durable queue message and empties the queue.
    const q = new DurableQueue(
      n.handle.kernel.get("state:kv"),
      outboxQueueName(key.id, "policies"),
    );
    await until(
      async () => (await q.get(m.id))?.state === "done",
      "the ack to settle the queue message",
    );
    await until(
      async () =>
        await n.metric("plexus_gateway_queue_depth", { agent: key.id }) === 0 &&
        await n.metric("plexus_gateway_deliveries_total", {
            outcome: "acked",
          }) === 1,
      "an empty queue and one acked delivery",
    );
    await sleep(300);
    assert.equal(inbox.messages.length, 1, "handled once");
    const stats = agent.stats();
    assert.equal(stats.delivered, 1);
    assert.equal(stats.duplicates, 0, "not even a deduplicated redelivery");
    const status = await (await n.api(`/api/v1/agents/${key.id}/status`))
      .json();
    assert.equal(status.connected, true);
    assert.deepEqual(status.channels, ["policies"]);
  });
});

Deno.test("sdk: a burst of broadcasts and durable sends reaches the SDK in batched frames, every message once and in order; the batched acks settle every durable one", async () => {
  await withNode({
    channels: {
      policies: { subscribe: ["agent"] },
      alerts: { subscribe: ["agent"], durable: false },
    },
  }, async (n) => {
    const key = await enrolledKey(n);
    await using agent = await connectAgent({
      url: n.url,
      id: key.id,
      privateKey: seedOf(key),
      backoff: TEST_BACKOFF,
    });
    const alerts = new Inbox();
    const policies = new Inbox();
    await agent.subscribe("alerts", alerts.handler);
    await agent.subscribe("policies", policies.handler);
    const gw = n.handle.kernel.get<AgentGateway>("gateway:agents");
    const framesBefore = agent.stats().framesIn;
    const recordsBefore = agent.stats().recordsIn;
    const sent = await Promise.all(
      Array.from({ length: 40 }, (_, i) => gw.broadcast("alerts", { i })),
    );
    assert.ok(sent.every((r) => r.sentTo.length === 1));
    const got = await alerts.waitFor(40);
    assert.deepEqual(
      got.map((m) => m.payload),
      Array.from({ length: 40 }, (_, i) => ({ i })),
    );
    const records = agent.stats().recordsIn - recordsBefore;
    const frames = agent.stats().framesIn - framesBefore;
    assert.equal(records, 40);
    assert.ok(frames < records, `${frames} frames for ${records} records`);
    // Durable: 20 sends at once; every one is acked (by few ack records).
    const ids = (await Promise.all(
      Array.from({ length: 20 }, (_, i) => gw.send(key.id, "policies", { i })),
    )).map((r) => r.messageId);
    const msgs = await policies.waitFor(20);
    assert.deepEqual(new Set(msgs.map((m) => m.id)), new Set(ids));
    const q = new DurableQueue(
      n.handle.kernel.get("state:kv"),
      outboxQueueName(key.id, "policies"),
    );
    await until(async () => {
      for (const id of ids) {
        if ((await q.get(id))?.state !== "done") return false;
      }
      return true;
    }, "every durable message acked");
    assert.equal(agent.stats().duplicates, 0);
  });
});

Deno.test("sdk: publish on 'heartbeat' resolves on the node's ack, and a router subscriber on the node has the envelope by then", async () => {
  await withNode({}, async (n) => {
    const key = await enrolledKey(n);
    const seen: Envelope[] = [];
    router(n).subscribe(
      "agent.*.heartbeat",
      (e) => void seen.push(e as Envelope),
    );
    await using agent = await connectAgent({
      url: n.ws,
      id: key.id,
      privateKey: seedOf(key),
      backoff: TEST_BACKOFF,
    });
    assert.equal(agent.node, "a");
    await agent.publish("heartbeat", { uptime: 42 }, {
      priority: 6,
      correlationId: "hb-1",
    });
    assert.equal(seen.length, 1);
    const env = seen[0];
    assert.equal(env.topic, `agent.${key.id}.heartbeat`);
    assert.equal(env.source, key.id);
    assert.deepEqual(env.payload, { uptime: 42 });
    assert.equal(env.priority, 6);
    assert.equal(env.correlationId, "hb-1");
    assert.equal(env.headers["agent-id"], key.id);
    assert.equal(env.headers.node, "a");
    assert.equal(env.headers.sid, agent.sessionId);
    assert.equal(agent.stats().acked, 1);
    // A channel outside the agent's roles is refused and the session goes on.
    await assert.rejects(
      agent.publish("results", { no: true }),
      isAgentError("forbidden"),
    );
    await agent.publish("heartbeat", { uptime: 43 });
    assert.equal(seen.length, 2);
  });
});

Deno.test("sdk: request/reply from the agent to a backend handler registered through the kernel's gateway:agents capability", async () => {
  await withNode({ requestTimeoutMs: 2000 }, async (n) => {
    const key = await enrolledKey(n);
    const agents = n.handle.kernel.get<AgentGateway>("gateway:agents");
    const off = agents.onRequest("agent.*.requests", (req) => {
      const p = req.payload as { op: string };
      if (p.op === "deny") throw new GatewayRequestError("forbidden", "no way");
      return { echo: p, agent: req.agentId, roles: req.roles };
    });
    await using agent = await connectAgent({
      url: n.ws,
      id: key.id,
      privateKey: seedOf(key),
      backoff: TEST_BACKOFF,
    });
    assert.deepEqual(await agent.request("requests", { op: "hi" }), {
      echo: { op: "hi" },
      agent: key.id,
      roles: ["agent"],
    });
    await assert.rejects(
      agent.request("requests", { op: "deny" }),
      (err: unknown) => {
        isAgentError("forbidden")(err);
        assert.match((err as Error).message, /no way/);
        return true;
      },
    );
    off();
    await assert.rejects(
      agent.request("requests", { op: "hi" }),
      isAgentError("no_handler"),
    );
  });
});

Deno.test("sdk: on a signed channel the SDK verifies the node's signature against the welcome's node key; pinned to another key it refuses the node", async () => {
  await withNode({
    channels: {
      policies: { subscribe: ["agent"] },
      commands: { subscribe: ["agent"], signed: true },
      audit: { publish: ["agent"], signed: true },
    },
  }, async (n) => {
    const key = await enrolledKey(n);
    const nodeKey = n.handle.security.nodeKey.publicJwk.x!;
    const audit: Envelope[] = [];
    router(n).subscribe("agent.*.audit", (e) => void audit.push(e as Envelope));
    const agent = sdkClient(n.ws, key, {
      trustedNodeKeys: [nodeKey],
      channels: { audit: { signed: true } },
    });
    await using _ = agent;
    const ready: AgentEvents["ready"][] = [];
    agent.on("ready", (e) => ready.push(e));
    await agent.connect();
    assert.equal(ready[0].nodeKey, nodeKey);
    const commands = new Inbox();
    const policies = new Inbox();
    await agent.subscribe("commands", commands.handler);
    await agent.subscribe("policies", policies.handler);
    const c = await n.post(`/api/v1/agents/${key.id}/send`, {
      channel: "commands",
      message: { run: "reboot" },
      message_type: "command",
    });
    assert.equal(c.body.status, "sent");
    const p = await n.post(`/api/v1/agents/${key.id}/send`, {
      channel: "policies",
      message: { v: 1 },
    });
    assert.equal(p.body.status, "sent");
    const [cmd] = await commands.waitFor(1);
    const [pol] = await policies.waitFor(1);
    assert.equal(cmd.signed, true, "signed by the node and verified");
    assert.deepEqual(cmd.payload, { run: "reboot" });
    assert.equal(cmd.type, "command");
    assert.equal(pol.signed, false);
    assert.equal(agent.stats().badSignatures, 0);
    // The agent's side: signed by channel default, refused when unsigned.
    await agent.publish("audit", { action: "started" });
    assert.equal(audit.length, 1);
    assert.equal(audit[0].headers.signature, "ed25519");
    await assert.rejects(
      agent.publish("audit", { action: "sneaky" }, { signed: false }),
      isAgentError("bad_request"),
    );
    assert.equal(audit.length, 1);

    // Pinned to a key that is not this node's: the welcome is refused.
    const wary = sdkClient(n.ws, key, {
      trustedNodeKeys: [(await generateAgentKey()).publicKey],
    });
    const refused = new Promise<AgentEvents["error"]>((resolve) =>
      wary.on("error", (e) => e.context === "handshake" && resolve(e))
    );
    wary.connect().catch(() => {});
    const e = await deadline(refused, 5000, "the handshake error");
    assert.ok(e.error instanceof HandshakeError);
    assert.equal((e.error as HandshakeError).reason, "untrusted-node");
    assert.equal(wary.stats().connects, 0);
    await wary.close();
    // The pinned agent's session was not disturbed by the refused one.
    await agent.publish("audit", { action: "still here" });
    assert.equal(audit.length, 2);
  });
});

Deno.test("sdk: messages sent while the agent was offline arrive after it connects, in priority order (ties in send order), exactly once after acks; a reconnect redelivers nothing", async () => {
  await withNode({}, async (n) => {
    const key = await enrolledKey(n);
    const prios = [1, 9, 4, 9, 0, 7];
    const ids: string[] = [];
    for (const [i, priority] of prios.entries()) {
      const r = await n.post(`/api/v1/agents/${key.id}/send`, {
        channel: "policies",
        message: { i },
        priority,
      });
      assert.equal(r.status, 200);
      assert.equal(r.body.status, "queued");
      ids.push(r.body.message_id as string);
    }
    const agent = sdkClient(n.ws, key);
    await using _ = agent;
    const ready: AgentEvents["ready"][] = [];
    agent.on("ready", (e) => ready.push(e));
    const inbox = new Inbox();
    // The handler first: the backlog is pushed right after the sub.
    const subscribed = agent.subscribe("policies", inbox.handler);
    await agent.connect();
    await subscribed;
    await inbox.waitFor(prios.length);
    assert.deepEqual(
      inbox.messages.map((m) => m.priority),
      [9, 9, 7, 4, 1, 0],
    );
    assert.deepEqual(inbox.payloads, [
      { i: 1 },
      { i: 3 },
      { i: 5 },
      { i: 2 },
      { i: 0 },
      { i: 4 },
    ]);
    assert.deepEqual(
      inbox.messages.map((m) => m.id),
      [1, 3, 5, 2, 0, 4].map((i) => ids[i]),
    );
    const depth = { agent: key.id };
    await until(
      async () =>
        await n.metric("plexus_gateway_deliveries_total", {
            outcome: "acked",
          }) === prios.length &&
        await n.metric("plexus_gateway_queue_depth", depth) === 0,
      "all six acked and an empty queue",
    );

    // The node drops the connection; the SDK reconnects (resuming) and
    // subscribes again; nothing comes back, not even as a duplicate.
    const kicked = n.gateway.kickLocal(
      key.id,
      undefined,
      4002,
      "test: connection dropped",
    );
    assert.ok(kicked);
    await until(() => ready.length === 2, "the SDK to reconnect");
    assert.equal(ready[1].resumed, true);
    await until(
      async () =>
        (await (await n.api(`/api/v1/agents/${key.id}/status`)).json())
          .channels?.includes("policies"),
      "the renewed subscription",
    );
    await sleep(400);
    assert.equal(inbox.messages.length, prios.length);
    assert.equal(agent.stats().duplicates, 0, "no redelivery after acks");
    assert.equal(
      await n.metric("plexus_gateway_deliveries_total", { outcome: "pushed" }),
      prios.length,
    );
    assert.equal(
      await n.metric("plexus_gateway_handshakes_total", {
        outcome: "ok",
        reason: "resumed",
      }),
      1,
    );
    // A fresh client (no memory of the ids) gets nothing either.
    await agent.close();
    const fresh = new Inbox();
    const again = sdkClient(n.ws, key);
    await using __ = again;
    const sub = again.subscribe("policies", fresh.handler);
    await again.connect();
    await sub;
    await sleep(400);
    assert.equal(fresh.messages.length, 0);
    assert.equal(again.stats().recordsIn, 2, "ready and the sub's ok only");
  });
});

Deno.test("sdk: the same agent connecting twice: the first client gets 4409 and stops for good (state closed, code replaced); the second keeps working", async () => {
  await withNode({}, async (n) => {
    const key = await enrolledKey(n);
    const first = sdkClient(n.ws, key);
    await using _ = first;
    const firstInbox = new Inbox();
    const firstConnecting: AgentEvents["connecting"][] = [];
    first.on("connecting", (e) => firstConnecting.push(e));
    await first.connect();
    await first.subscribe("policies", firstInbox.handler);

    const second = sdkClient(n.ws, key);
    await using __ = second;
    const secondInbox = new Inbox();
    const sub = second.subscribe("policies", secondInbox.handler);
    await second.connect();
    await sub;

    const info = await deadline(first.closed, 5000, "the first client to stop");
    assert.equal(info.code, CloseCode.replaced);
    assert.ok(info.error instanceof AgentError);
    assert.equal(info.error.code, "replaced");
    assert.equal(first.state, "closed");
    // Longer than the largest backoff: the first client did not try again.
    await sleep(TEST_BACKOFF.maxMs + 300);
    assert.equal(firstConnecting.length, 1);
    assert.equal(first.stats().connects, 1);
    assert.equal(
      await n.metric("plexus_gateway_handshakes_total", { outcome: "ok" }),
      2,
    );
    assert.equal(
      await n.metric("plexus_gateway_closes_total", { code: "4409" }),
      1,
    );
    await assert.rejects(
      first.publish("heartbeat", {}),
      isAgentError("closed"),
    );

    assert.equal(second.state, "ready");
    await second.publish("heartbeat", { alive: true });
    const r = await n.post(`/api/v1/agents/${key.id}/send`, {
      channel: "policies",
      message: "to the second",
    });
    assert.equal(r.body.status, "sent");
    const [m] = await secondInbox.waitFor(1);
    assert.equal(m.payload, "to the second");
    assert.equal(firstInbox.messages.length, 0);
    const status = await (await n.api(`/api/v1/agents/${key.id}/status`))
      .json();
    assert.equal(status.connected, true);
  });
});

/** A drop-in plugin that logs every envelope the router carries on `agent.*.telemetry`. */
const PROBE_PLUGIN = `// generated by tests/gateway/sdk_test.ts
export default {
  manifest: {
    name: "sdk-probe",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:sdk-probe"],
  },
  setup(ctx) {
    ctx.router.subscribe("agent.*.telemetry", (env) => {
      ctx.log.info("sdk-probe telemetry", {
        id: env.id,
        source: env.source,
        priority: env.priority,
        payload: env.payload,
      });
    });
    return Promise.resolve({ stop: () => Promise.resolve() });
  },
};
`;

/**
 * Node A as a real process on a fixed port (so it can be restarted where
 * the SDK expects it, on the same data dir, key and KV file, with the probe
 * plugin), and node B as a process sharing A's KV file (its own data dir
 * and key): the backend's way in while A is down.
 */
async function restartRig() {
  const dir = await Deno.makeTempDir({ prefix: "plexus-sdk-restart-" });
  const plugins = join(dir, "plugins.d");
  await Deno.mkdir(plugins);
  await Deno.writeTextFile(join(plugins, "sdk_probe.js"), PROBE_PLUGIN);
  const config = await writeConfig(dir, {
    pluginConfig: { gateway: { heartbeatMs: 5000 } },
    rateLimit: { wsHandshake: { rate: 10_000, burst: 10_000 } },
  });
  const port = freePort();
  const dirB = join(dir, "b");
  await Deno.mkdir(dirB);
  return {
    port,
    startA: () =>
      startPlexus({
        dir,
        port: String(port),
        pluginsDir: plugins,
        args: ["--config", config, "--node-id", "a"],
      }),
    startB: () =>
      startPlexus({
        dir: dirB,
        defaults: false,
        allowWrite: [dir],
        args: [
          "--port",
          "0",
          "--data-dir",
          dirB,
          "--kv",
          join(dir, "plexus.kv"),
          "--plugins-dir",
          join(dirB, "none"),
          "--config",
          config,
          "--node-id",
          "b",
        ],
      }),
  };
}

Deno.test("sdk: a node process restarted with SIGTERM on the same port, data dir and KV: the SDK reconnects by itself, resubscribes, gets what was queued meanwhile, and flushes its own sends in priority order", async () => {
  const { port, startA, startB } = await restartRig();
  let a1: PlexusProcess | undefined;
  let a2: PlexusProcess | undefined;
  let b: PlexusProcess | undefined;
  try {
    a1 = await startA();
    b = await startB();
    assert.equal(a1.url, `http://127.0.0.1:${port}`);
    const key = await generateAgentKey();
    await enrolOn(a1, key);
    const agent = sdkClient(a1.url, key);
    await using _ = agent;
    const ready: AgentEvents["ready"][] = [];
    const disconnected: AgentEvents["disconnected"][] = [];
    agent.on("ready", (e) => ready.push(e));
    agent.on("disconnected", (e) => disconnected.push(e));
    const inbox = new Inbox();
    const subscribed = agent.subscribe("policies", inbox.handler);
    await agent.connect();
    await subscribed;

    const sendVia = async (
      p: PlexusProcess,
      message: unknown,
      prio: number,
    ) => {
      const r = await postTo(p, `/api/v1/agents/${key.id}/send`, {
        channel: "policies",
        message,
        priority: prio,
      });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body as { message_id: string; status: string };
    };
    const before = await sendVia(a1, "before", 5);
    assert.equal(before.status, "sent");
    await inbox.waitFor(1);
    // A has the ack of "before" before it stops. The SDK sends the acks of
    // one task together, once the task ends; an ack still on its way when
    // the node stops is lost with the connection, and the message comes
    // again after the restart (the SDK drops the repeat), which is not what
    // this test is about.
    await until(
      async () =>
        metricValue(
          await (await a1!.fetch("/metrics")).text(),
          "plexus_gateway_deliveries_total",
          { outcome: "acked" },
        ) === 1,
      "A to have the ack of 'before'",
    );

    a1.signal("SIGTERM");
    assert.equal((await a1.exit()).code, 0);
    await until(() => disconnected.length > 0, "the SDK to see the close");
    assert.equal(disconnected[0].code, 1001);
    assert.equal(disconnected[0].byNode, true);
    assert.notEqual(disconnected[0].retryInMs, undefined, "it will retry");

    // While A is down: the SDK queues its sends, the backend queues through B.
    const prios = [2, 8, 5, 8];
    const published = prios.map((priority, n) =>
      agent.publish("telemetry", { n }, { priority })
    );
    assert.notEqual(agent.state, "ready");
    assert.equal(agent.stats().queued, prios.length);
    const during1 = await sendVia(b, "during-1", 3);
    const during2 = await sendVia(b, "during-2", 8);
    assert.equal(during1.status, "queued");
    assert.equal(during2.status, "queued");

    a2 = await startA();
    assert.equal(a2.url, a1.url);
    await deadline(Promise.all(published), 20_000, "the queued publishes");
    await inbox.waitFor(3);
    assert.equal(ready.length, 2);
    assert.equal(ready[1].node, "a");
    assert.equal(
      metricValue(
        await (await a2.fetch("/metrics")).text(),
        "plexus_gateway_handshakes_total",
        { outcome: "ok" },
      ),
      1,
      "one handshake on the restarted node",
    );
    assert.deepEqual(inbox.payloads, ["before", "during-2", "during-1"]);
    assert.deepEqual(
      inbox.messages.map((m) => m.id),
      [before.message_id, during2.message_id, during1.message_id],
    );
    // The SDK's sends reached the backend (a plugin on A) in priority order.
    const telemetry = await poll(
      () => {
        const lines = a2!.records.filter((r) =>
          r.msg === "sdk-probe telemetry"
        );
        return lines.length >= prios.length && lines;
      },
      "the probe plugin's log lines",
      10_000,
    );
    assert.deepEqual(
      telemetry.map((l) => (l.payload as { n: number }).n),
      [1, 3, 2, 0],
    );
    assert.ok(telemetry.every((l) => l.source === key.id));
    assert.deepEqual(telemetry.map((l) => l.priority), [8, 8, 5, 2]);
    // Exactly once: the acks settle A's queue and nothing comes back.
    await until(
      async () =>
        metricValue(
          await (await a2!.fetch("/metrics")).text(),
          "plexus_gateway_queue_depth",
          { agent: key.id },
        ) === 0,
      "A's queue for the agent to empty",
    );
    await sleep(300);
    assert.equal(inbox.messages.length, 3);
    assert.equal(agent.stats().duplicates, 0);
    const status = await (await a2.api(`/api/v1/agents/${key.id}/status`))
      .json();
    assert.equal(status.connected, true);
    assert.deepEqual(status.channels, ["policies"]);
  } finally {
    await a2?.close();
    await b?.close();
    await a1?.close();
  }
});

// Attempts that never reach the node (connection refused while it
// restarts) must not use up the resumption token: it is given back unless
// the auth record carrying it was sent.
Deno.test({
  name:
    "sdk: after a node restart the SDK resumes its session, even after attempts that never reached the node",
  fn: async () => {
    const { startA } = await restartRig();
    let a1: PlexusProcess | undefined;
    let a2: PlexusProcess | undefined;
    try {
      a1 = await startA();
      const key = await generateAgentKey();
      await enrolOn(a1, key);
      const agent = sdkClient(a1.url, key);
      await using _ = agent;
      const ready: AgentEvents["ready"][] = [];
      const disconnected: AgentEvents["disconnected"][] = [];
      agent.on("ready", (e) => ready.push(e));
      agent.on("disconnected", (e) => disconnected.push(e));
      await agent.connect();
      a1.signal("SIGTERM");
      assert.equal((await a1.exit()).code, 0);
      // At least one attempt fails while the node is down.
      await until(() => disconnected.length >= 2, "a failed attempt");
      a2 = await startA();
      await until(() => ready.length === 2, "the SDK to reconnect", 10_000);
      assert.equal(ready[1].resumed, true);
      assert.equal(agent.stats().resumed, 1);
      assert.equal(
        metricValue(
          await (await a2.fetch("/metrics")).text(),
          "plexus_gateway_handshakes_total",
          { outcome: "ok", reason: "resumed" },
        ),
        1,
      );
    } finally {
      await a2?.close();
      await a1?.close();
    }
  },
});

Deno.test("sdk: 'main.ts agent' as a real process against a real node: keygen, enrol, subscribe; a send appears as one JSON line on its stdout; SIGTERM exits 0", async () => {
  const work = await Deno.makeTempDir({ prefix: "plexus-sdk-cli-" });
  let node: PlexusProcess | undefined;
  let child: Deno.ChildProcess | undefined;
  try {
    node = await startPlexus();
    const keyFile = join(work, "agent.json");
    const keygen = await runMain(work, [], ["keygen"]);
    assert.equal(keygen.code, 0, keygen.stderr);
    await Deno.writeTextFile(keyFile, keygen.stdout);
    const key = JSON.parse(keygen.stdout);
    await enrolOn(node, key);
    child = await spawnMain(
      work,
      ["--allow-net=127.0.0.1", `--allow-read=${keyFile}`],
      ["agent", "--url", node.url, "--key", keyFile, "--subscribe", "policies"],
    );
    const stdout = new LineReader(child.stdout);
    const stderr = new LineReader(child.stderr);
    await stderr.waitFor(
      (l) => l.includes(`subscribed to backend.${key.id}.policies`),
      "the agent's subscription",
    );
    const r = await postTo(node, `/api/v1/agents/${key.id}/send`, {
      channel: "policies",
      message: { v: 3, rules: ["allow"] },
      message_type: "policy",
      priority: 6,
      correlation_id: "cli-1",
    });
    assert.equal(r.status, 200);
    assert.equal(r.body.status, "sent");
    const line = await stdout.waitFor(() => true, "the message line");
    const printed = JSON.parse(line);
    assert.ok(Date.parse(printed.receivedAt) > 0);
    assert.deepEqual({ ...printed, receivedAt: undefined }, {
      channel: `backend.${key.id}.policies`,
      type: "policy",
      id: r.body.message_id,
      payload: { v: 3, rules: ["allow"] },
      priority: 6,
      signed: false,
      correlationId: "cli-1",
      receivedAt: undefined,
    });
    // The demo acked it: the node's queue for the agent is empty.
    await poll(
      async () =>
        metricValue(
            await (await node!.fetch("/metrics")).text(),
            "plexus_gateway_queue_depth",
            { agent: key.id },
          ) === 0 &&
        metricValue(
            await (await node!.fetch("/metrics")).text(),
            "plexus_gateway_deliveries_total",
            { outcome: "acked" },
          ) === 1,
      "the agent's ack",
      10_000,
    );
    child.kill("SIGTERM");
    const status = await deadline(child.status, EXIT_TIMEOUT_MS, "exit");
    child = undefined;
    await Promise.all([stdout.done, stderr.done]);
    assert.equal(status.code, 0, stderr.lines.join("\n"));
    assert.ok(stderr.lines.some((l) => l.includes("SIGTERM: closing")));
    assert.equal(stdout.lines.length, 1, "nothing else on stdout");
    // It closed its session: the node shows it offline.
    await poll(
      async () =>
        (await (await node!.api(`/api/v1/agents/${key.id}/status`)).json())
          .connected === false,
      "the agent to show disconnected",
      10_000,
    );
  } finally {
    if (child) {
      child.kill("SIGKILL");
      await child.status;
    }
    await node?.close();
    await Deno.remove(work, { recursive: true });
  }
});
