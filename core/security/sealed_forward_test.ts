import { flipCiphertext } from "./_sealed_testing.ts";
import assert from "node:assert/strict";
import { z } from "zod";
import { createKernel } from "../kernel.ts";
import { createLogger } from "../observe/logger.ts";
import { createRouter } from "../router.ts";
import { transportPlugin } from "../transport_plugin.ts";
import { generateNodeKey } from "./node_key.ts";
import { createEnvelope, type Envelope } from "../envelope.ts";
import { createMetrics } from "../observe/metrics.ts";
import { gatewayAgentKey } from "../state/keys.ts";
import {
  MemoryBroker,
  memoryTransport,
  stopBroker,
} from "../../testing/memory_transport.ts";
import { waitFor } from "../../testing/conformance.ts";
import { generateKeyPair } from "./hpke.ts";
import {
  SEALED_FROM_HEADER,
  SealedError,
  sealedOpener,
  sealedTransport,
  SEALING_POLICY,
  type SealingPolicy,
} from "./sealed_transport.ts";
import {
  forwardSealedToAgents,
  SEALED_MESSAGE_TYPE,
  type SealedAgentSink,
} from "./sealed_forward.ts";
import { kvSealingDirectory, signSealingKeyStatement } from "./sealing_keys.ts";

const SECRET = "persimmon-4410";
const B64U = { alphabet: "base64url", omitPadding: true } as const;

const policy: SealingPolicy = {
  topics: [
    { pattern: "ops.plain", recipients: ["node:b"] },
    {
      pattern: "ops.*",
      recipients: ["agent:x", "agent:y", "node:b"],
      deliver: {
        channel: "sealed",
        topics: ["ops.keys", "ops.plain", "ops.other"],
      },
    },
  ],
};

async function ed25519() {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  return {
    ...pair,
    raw: new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey)),
  };
}

interface Sent {
  agentId: string;
  channel: string;
  message: Envelope;
  opts?: Parameters<SealedAgentSink["send"]>[3];
}

/** A broker, a directory with node a, node b and enrolled agents x and y. */
async function rig(options: { forward?: boolean } = {}) {
  const broker = new MemoryBroker();
  const kv = await Deno.openKv(":memory:");
  const directory = kvSealingDirectory(kv, { cacheMs: 0 });
  const agents = new Map<string, Awaited<ReturnType<typeof generateKeyPair>>>();
  for (const id of ["x", "y"]) {
    const key = await ed25519();
    await kv.set(gatewayAgentKey(id), {
      agentId: id,
      publicKey: key.raw.toBase64(B64U),
      roles: ["agent"],
    });
    const x = await generateKeyPair();
    await directory.publishAgent(
      id,
      x.publicKey,
      await signSealingKeyStatement(key.privateKey, id, x.publicKey),
    );
    agents.set(id, x);
  }
  const nodeKeys = async (id: string) => {
    const ed = await ed25519();
    const x25519 = await generateKeyPair();
    await directory.publish(`node:${id}`, x25519.publicKey, ed.raw);
    return { id: `node:${id}`, signingKey: ed.privateKey, x25519, directory };
  };
  const a = await nodeKeys("a");
  await nodeKeys("b");
  const sender = sealedTransport(
    memoryTransport({ broker, maxMessageBytes: 1 << 20 }),
    policy,
    a,
  );
  const raw = memoryTransport({ broker, maxMessageBytes: 1 << 20 });
  const metrics = createMetrics("plexus_");
  const sent: Sent[] = [];
  let sink: SealedAgentSink | undefined = {
    send(agentId, channel, message, opts) {
      sent.push({ agentId, channel, message: message as Envelope, opts });
      return Promise.resolve({ messageId: opts?.id ?? "", status: "queued" });
    },
  };
  const opened: string[] = [];
  const forwarder = forwardSealedToAgents(
    raw,
    options.forward === false ? { topics: [] } : policy,
    {
      opener: sealedOpener({ directory }, {
        onOpened: () => opened.push("forwarder opened a message"),
      }),
      sink: () => sink,
      metrics,
      noSinkDelayMs: 10,
      retryDelayMs: 10,
    },
  );
  assert.equal(await forwarder.ready, true);
  const publish = (topic: string, payload: unknown) =>
    sender.publish(
      topic,
      createEnvelope({ type: "event", topic, source: "a", payload }),
    );
  return {
    broker,
    raw,
    sender,
    directory,
    agents,
    metrics,
    sent,
    opened,
    publish,
    setSink(s: SealedAgentSink | undefined) {
      sink = s;
    },
    async [Symbol.asyncDispose]() {
      await forwarder.close();
      await sender.close();
      await raw.close();
      stopBroker(broker);
      kv.close();
    },
  };
}

const metric = (r: Awaited<ReturnType<typeof rig>>, line: RegExp) =>
  r.metrics.render().split("\n").find((l) => line.test(l));

Deno.test("sealed forward: each agent recipient gets the envelope as it came off the broker, unopened; node recipients and other rules are not forwarded", async () => {
  await using r = await rig();
  await r.publish("ops.keys", { secret: SECRET });
  await waitFor("two sends", () => r.sent.length === 2, 5000);
  assert.deepEqual(r.sent.map((s) => s.agentId).sort(), ["x", "y"]);
  for (const s of r.sent) {
    assert.equal(s.channel, "sealed");
    assert.equal(s.opts?.messageType, SEALED_MESSAGE_TYPE);
    assert.equal(s.opts?.id, s.message.id);
    assert.equal(s.opts?.sender, "node:a");
    assert.ok(!JSON.stringify(s.message).includes(SECRET));
  }
  assert.deepEqual(r.opened, []);
  assert.match(
    metric(r, /^plexus_sealed_forwarded_total\{outcome="forwarded"\}/) ?? "",
    / 2$/,
  );
  // Each agent opens its copy with its own key.
  for (const s of r.sent) {
    const opener = sealedOpener({
      id: `agent:${s.agentId}`,
      x25519: r.agents.get(s.agentId)!,
      directory: r.directory,
    });
    const env = await opener.open(s.message, s.message.topic);
    assert.deepEqual(env.payload, { secret: SECRET });
    assert.equal(env.headers[SEALED_FROM_HEADER], "node:a");
  }
  // ops.plain matches an earlier rule with no agents: acked, not forwarded.
  await r.publish("ops.plain", { n: 1 });
  await r.publish("ops.keys", { n: 2 });
  await waitFor("the next send", () => r.sent.length === 4, 5000);
  assert.ok(r.sent.every((s) => s.message.topic === "ops.keys"));
});

Deno.test("sealed forward: a sealed envelope opens only for its recipients: another key is no_key, the verifier alone is not_recipient", async () => {
  await using r = await rig();
  await r.publish("ops.keys", { secret: SECRET });
  await waitFor("sends", () => r.sent.length === 2, 5000);
  const env = r.sent[0].message;
  const wrongKey = sealedOpener({
    id: `agent:${r.sent[0].agentId}`,
    x25519: await generateKeyPair(),
    directory: r.directory,
  });
  await assert.rejects(
    wrongKey.open(env, env.topic),
    (e: Error) => e instanceof SealedError && e.code === "no_key",
  );
  const verifier = sealedOpener({ directory: r.directory });
  assert.deepEqual((await verifier.verify(env, env.topic)).from, "node:a");
  await assert.rejects(
    verifier.open(env, env.topic),
    (e: Error) => e instanceof SealedError && e.code === "not_recipient",
  );
});

Deno.test("sealed forward: tampered, re-addressed and replayed envelopes are dead-lettered with their code and never handed on", async () => {
  await using r = await rig();
  await r.publish("ops.keys", { secret: SECRET });
  await waitFor("sends", () => r.sent.length === 2, 5000);
  const env = r.sent[0].message;
  await r.raw.publish("ops.keys", {
    ...env,
    id: crypto.randomUUID(),
    payload: flipCiphertext(env.payload as string, 0),
  });
  await r.raw.publish("ops.other", { ...env, topic: "ops.other" });
  await r.raw.publish("ops.keys", env);
  for (const reason of ["bad_signature", "replay", "readdressed"]) {
    await waitFor(
      reason,
      () =>
        metric(
          r,
          new RegExp(`^plexus_sealed_refused_total\\{reason="${reason}"\\} 1`),
        ),
      5000,
    );
  }
  const dead = await r.raw.deadLetters!("ops.keys");
  assert.deepEqual(
    dead.map((d) => d.reason.split(":")[0]).sort(),
    ["sealed bad_signature", "sealed replay"],
  );
  const moved = await r.raw.deadLetters!("ops.other");
  assert.match(
    moved[0]?.reason ?? "",
    /^sealed readdressed: sealed for topic 'ops.keys'/,
  );
  assert.equal(r.sent.length, 2);
});

Deno.test("sealed forward: when the gateway goes away the message waits (nak) and goes once one is back; a failed store is retried; an unknown agent is dead-lettered", async () => {
  await using r = await rig();
  r.setSink(undefined);
  await r.publish("ops.keys", { n: 1 });
  await waitFor(
    "a nak for want of a gateway",
    () => metric(r, /^plexus_sealed_forwarded_total\{outcome="no_gateway"\}/),
    5000,
  );
  assert.equal(r.sent.length, 0);
  // Attempt 2 (the nak was 1): x's store fails, y's send throws an error
  // without a status: retried. Attempt 3: x is stored, y is unknown (404).
  // Every attempt counts against the envelope's maxAttempts (3).
  const calls = { x: 0, y: 0 };
  const sent: string[] = [];
  r.setSink({
    send(agentId, _channel, _message, opts) {
      const n = ++calls[agentId as "x" | "y"];
      if (agentId === "x" && n === 1) {
        return Promise.resolve({
          messageId: opts?.id ?? "",
          status: "failed",
          error: "kv unavailable",
        });
      }
      if (agentId === "y") {
        return Promise.reject(
          n === 1
            ? new Error("database is locked")
            // The gateway's GatewayError: a 4xx is final.
            : Object.assign(new Error("no agent 'y'"), { status: 404 }),
        );
      }
      sent.push(agentId);
      return Promise.resolve({ messageId: opts?.id ?? "", status: "sent" });
    },
  });
  await waitFor(
    "dead-lettered for the unknown agent",
    async () => (await r.raw.deadLetters!("ops.keys")).length === 1,
    5000,
  );
  const [dead] = await r.raw.deadLetters!("ops.keys");
  assert.match(dead.reason, /^sealed undeliverable: agent 'y' on 'sealed'/);
  assert.deepEqual(sent, ["x"]);
  assert.deepEqual(calls, { x: 2, y: 2 });
  assert.ok(
    metric(r, /^plexus_sealed_forwarded_total\{outcome="retry"\} 1/),
  );
  assert.ok(
    metric(r, /^plexus_sealed_forwarded_total\{outcome="undeliverable"\}/),
  );
});

Deno.test("sealed forward: a node that has no gateway after waitForSinkMs does not join the group; one that gets it later does", async () => {
  await using r = await rig({ forward: false });
  const raw = memoryTransport({ broker: r.broker, maxMessageBytes: 1 << 20 });
  let subscribed = 0;
  const spy = {
    ...raw,
    subscribe: (...args: Parameters<typeof raw.subscribe>) => {
      subscribed++;
      return raw.subscribe(...args);
    },
  };
  const never = forwardSealedToAgents(spy, policy, {
    opener: sealedOpener({ directory: r.directory }),
    sink: () => undefined,
    waitForSinkMs: 50,
    pollMs: 10,
  });
  assert.equal(await never.ready, false);
  assert.equal(subscribed, 0);
  let sink: SealedAgentSink | undefined;
  const got: string[] = [];
  const later = forwardSealedToAgents(spy, policy, {
    opener: sealedOpener({ directory: r.directory }),
    sink: () => sink,
    pollMs: 10,
  });
  try {
    sink = {
      send(agentId, _channel, _message, opts) {
        got.push(agentId);
        return Promise.resolve({ messageId: opts?.id ?? "", status: "sent" });
      },
    };
    assert.equal(await later.ready, true);
    assert.equal(subscribed, 3); // the rule's three topics
    await r.publish("ops.keys", { n: 1 });
    await waitFor("the forwarder's sends", () => got.length === 2, 5000);
    assert.deepEqual(got.sort(), ["x", "y"]);
  } finally {
    await never.close();
    await later.close();
    await raw.close();
  }
});

Deno.test("sealed forward: maxInFlight hands several messages to the gateway at once", async () => {
  await using r = await rig({ forward: false });
  const raw = memoryTransport({ broker: r.broker, maxMessageBytes: 1 << 20 });
  const gate = Promise.withResolvers<void>();
  let pending = 0;
  let most = 0;
  const forwarder = forwardSealedToAgents(raw, policy, {
    opener: sealedOpener({ directory: r.directory }),
    sink: () => ({
      async send(_agentId, _channel, _message, opts) {
        most = Math.max(most, ++pending);
        await gate.promise;
        pending--;
        return { messageId: opts?.id ?? "", status: "sent" };
      },
    }),
    maxInFlight: 3,
  });
  try {
    assert.equal(await forwarder.ready, true);
    for (let i = 0; i < 3; i++) await r.publish("ops.keys", { i });
    await waitFor("three sends waiting at once", () => pending === 3, 5000);
    gate.resolve();
    await waitFor("all sent", () => pending === 0, 5000);
    assert.equal(most, 3);
  } finally {
    gate.resolve();
    await forwarder.close();
    await raw.close();
  }
});

Deno.test("sealed forward: a forwarder whose subscription fails reports down with the reason; one forwarding reports up", async () => {
  await using r = await rig({ forward: false });
  const raw = memoryTransport({ broker: r.broker, maxMessageBytes: 1 << 20 });
  const sink: SealedAgentSink = {
    send: (_a, _c, _m, opts) =>
      Promise.resolve({ messageId: opts?.id ?? "", status: "sent" }),
  };
  const refusing = {
    ...raw,
    subscribe: () => Promise.reject(new Error("NOPERM on ops.keys")),
  };
  const broken = forwardSealedToAgents(refusing, policy, {
    opener: sealedOpener({ directory: r.directory }),
    sink: () => sink,
  });
  const working = forwardSealedToAgents(raw, policy, {
    opener: sealedOpener({ directory: r.directory }),
    sink: () => sink,
  });
  try {
    await assert.rejects(broken.ready, /NOPERM on ops.keys/);
    assert.deepEqual(broken.health(), {
      status: "down",
      detail:
        "cannot subscribe to forward sealed messages to agents: NOPERM on ops.keys",
    });
    assert.equal(await working.ready, true);
    assert.equal(working.health().status, "up");
    assert.match(working.health().detail!, /^forwarding to agents from /);
  } finally {
    await broken.close();
    await working.close();
    await raw.close();
  }
});

Deno.test("sealed forward: a node whose forwarder cannot subscribe is degraded in /health, with the reason", async () => {
  const dataDir = await Deno.makeTempDir();
  const kv = await Deno.openKv(":memory:");
  const broker = new MemoryBroker();
  const plugin = transportPlugin({
    name: "memory",
    config: z.strictObject({}),
    connect: () => {
      const inner = memoryTransport({ broker, maxMessageBytes: 1 << 20 });
      return Promise.resolve({
        ...inner,
        name: inner.name,
        caps: inner.caps,
        publish: inner.publish.bind(inner),
        // The forwarder's group may not read the topic.
        subscribe: () => Promise.reject(new Error("NOPERM on ops.keys")),
        close: inner.close.bind(inner),
      });
    },
  });
  const sink: SealedAgentSink = {
    send: (_a, _c, _m, opts) =>
      Promise.resolve({ messageId: opts?.id ?? "", status: "sent" }),
  };
  const kernel = createKernel({
    log: createLogger({ level: "error", sinks: [] }),
    metrics: createMetrics("plexus_"),
    kv,
    router: createRouter(),
    node: { id: "n1", version: "0", address: "http://127.0.0.1:0", dataDir },
    core: {
      "node:key": await generateNodeKey(),
      "gateway:agents": sink,
      [SEALING_POLICY]: {
        topics: [{
          pattern: "ops.keys",
          recipients: ["agent:x"],
          deliver: { channel: "sealed" },
        }],
      },
    },
  });
  try {
    kernel.register(plugin);
    await kernel.start();
    const entry = await waitFor("the forwarder's entry down", async () => {
      const h = await kernel.health();
      const e = h["memory/sealed-forward"];
      return e?.status === "down" ? e : undefined;
    }, 5000);
    assert.equal(
      entry.detail,
      "cannot subscribe to forward sealed messages to agents: NOPERM on ops.keys",
    );
    // A down entry makes /health degraded (core/http/app.ts).
    assert.equal((await kernel.health()).memory.status, "up");
  } finally {
    await kernel.stop();
    stopBroker(broker);
    kv.close();
    await Deno.remove(dataDir, { recursive: true });
  }
});
