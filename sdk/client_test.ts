/**
 * The agent SDK against a real WebSocket server on loopback: the in-test
 * gateway of `_test_gateway.ts`, which follows docs/protocol.md.
 */
import assert from "node:assert/strict";
import {
  AgentClient,
  type AgentClientOptions,
  AgentError,
  type AgentEvents,
  type AgentKey,
  generateAgentKey,
  parseAgentKey,
} from "./client.ts";
import { startTestGateway, type TestGatewayOptions } from "./_test_gateway.ts";
import { verifyMessageSignature } from "./protocol/channels.ts";
import { BatchWriter, type RecordSealer } from "./protocol/record.ts";

function seedOf(key: AgentKey): Uint8Array {
  return Uint8Array.fromBase64(key.privateKey, { alphabet: "base64url" });
}

/** Polls `check` every 5 ms until it returns a truthy value. */
async function until<T>(
  check: () => T | undefined | false | null,
  what: string,
  timeoutMs = 5000,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A gateway, an enrolled key and a client with fast reconnects. */
async function setup(
  gatewayOptions: TestGatewayOptions = {},
  clientOptions: Partial<AgentClientOptions> = {},
) {
  const gw = await startTestGateway(gatewayOptions);
  const key = await generateAgentKey();
  gw.enrol(key.id, key.publicKey);
  const agent = new AgentClient({
    url: gw.url,
    id: key.id,
    privateKey: seedOf(key),
    backoff: { initialMs: 10, maxMs: 40 },
    ...clientOptions,
  });
  const events: { type: keyof AgentEvents; event: unknown }[] = [];
  for (
    const type of [
      "connecting",
      "ready",
      "disconnected",
      "closed",
      "error",
    ] as const
  ) {
    agent.on(type, (event) => events.push({ type, event }));
  }
  return {
    gw,
    key,
    agent,
    events,
    async [Symbol.asyncDispose]() {
      await agent.close();
      await gw.close();
    },
  };
}

function assertAgentError(code: string) {
  return (err: unknown) => {
    assert.ok(err instanceof AgentError, `an AgentError, got ${err}`);
    assert.equal(err.code, code, err.message);
    return true;
  };
}

// ---------------------------------------------------------------- handshake

Deno.test("client: the handshake reaches ready, and a reconnect resumes with the token from ready", async () => {
  await using t = await setup();
  const { gw, key, agent, events } = t;
  await agent.connect();
  assert.equal(agent.state, "ready");
  assert.equal(agent.node, "node-test");
  const first = agent.sessionId;
  assert.equal(first, gw.sessionOf(key.id));
  assert.deepEqual(gw.handshakes, [
    { agent: key.id, resumed: false, outcome: "ready" },
  ]);
  assert.deepEqual(events.map((e) => e.type), ["connecting", "ready"]);

  gw.kick(key.id, 1011, "restart");
  await until(
    () => gw.handshakes.length === 2 && agent.state === "ready",
    "the second handshake",
  );
  assert.deepEqual(gw.handshakes[1], {
    agent: key.id,
    resumed: true,
    outcome: "ready",
  });
  assert.notEqual(agent.sessionId, first);
  const disconnected = events.find((e) => e.type === "disconnected")!
    .event as AgentEvents["disconnected"];
  assert.equal(disconnected.code, 1011);
  assert.equal(disconnected.byNode, true);
  assert.ok(disconnected.retryInMs! >= 0 && disconnected.retryInMs! < 10);
  assert.equal(agent.stats().connects, 2);
  assert.equal(agent.stats().resumed, 1);
});

Deno.test("client: a refused resumption token falls back once to a signature", async () => {
  await using t = await setup();
  const { gw, key, agent } = t;
  await agent.connect();
  gw.forgetResumeTokens();
  gw.kick(key.id);
  await until(
    () => gw.handshakes.length === 3 && agent.state === "ready",
    "the fallback handshake",
  );
  assert.deepEqual(
    gw.handshakes.map((h) => [h.resumed, h.outcome]),
    [[false, "ready"], [true, "auth_failed"], [false, "ready"]],
  );
});

Deno.test("client: 4401 after a signature ends the client with auth_failed, without retrying", async () => {
  const gw = await startTestGateway();
  try {
    const key = await generateAgentKey(); // never enrolled
    const agent = new AgentClient({
      url: gw.url,
      id: key.id,
      privateKey: seedOf(key),
      backoff: { initialMs: 1, maxMs: 1 },
    });
    await assert.rejects(agent.connect(), assertAgentError("auth_failed"));
    assert.equal(agent.state, "closed");
    const info = await agent.closed;
    assert.equal(info.code, 4401);
    assert.equal(info.error?.closeCode, 4401);
    await sleep(50);
    assert.equal(gw.handshakes.length, 1, "no second attempt");
    await assert.rejects(
      agent.publish("x", 1),
      assertAgentError("closed"),
    );
    await agent.close();
  } finally {
    await gw.close();
  }
});

Deno.test("client: 4409 (replaced by the same agent elsewhere) ends the client without reconnecting", async () => {
  await using t = await setup();
  const { gw, key, agent } = t;
  await agent.connect();
  await using second = new AgentClient({
    url: gw.url,
    id: key.id,
    privateKey: seedOf(key),
  });
  await second.connect();
  const info = await agent.closed;
  assert.equal(info.code, 4409);
  assert.equal(info.error?.code, "replaced");
  assert.equal(agent.state, "closed");
  await sleep(50);
  assert.equal(gw.handshakes.length, 2);
  assert.equal(second.state, "ready");
});

Deno.test("client: options are checked when the client is made", async () => {
  const key = await generateAgentKey();
  const base = { url: "ws://127.0.0.1:1/ws/agent", id: key.id };
  assert.throws(
    () => new AgentClient({ ...base, privateKey: new Uint8Array(31) }),
    RangeError,
  );
  assert.throws(
    () => new AgentClient({ ...base, id: "a.b", privateKey: seedOf(key) }),
    /id must be/,
  );
  assert.throws(
    () => new AgentClient({ ...base, url: "ftp://x", privateKey: seedOf(key) }),
    /ws:, wss:, http: or https:/,
  );
  assert.throws(
    () =>
      new AgentClient({
        ...base,
        privateKey: seedOf(key),
        trustedNodeKeys: ["01" + "00".repeat(31)],
      }),
    /small-order/,
  );
});

Deno.test("client: a node key outside trustedNodeKeys is refused and never authenticated to", async () => {
  await using t = await setup({}, {
    trustedNodeKeys: [(await generateAgentKey()).publicKey],
  });
  const { gw, agent, events } = t;
  void agent.connect().catch(() => {});
  await until(
    () => events.filter((e) => e.type === "error").length >= 2,
    "two refused welcomes",
  );
  assert.equal(gw.handshakes.length, 0, "no auth record was sent");
  const err = events.find((e) => e.type === "error")!.event as AgentEvents[
    "error"
  ];
  assert.match(err.error.message, /not trusted/);
  assert.equal(agent.state === "ready", false);
});

// ------------------------------------------------------------- publishing

Deno.test("client: publish resolves on the node's ack and carries channel, priority, type and correlation id", async () => {
  await using t = await setup();
  const { gw, key, agent } = t;
  await agent.connect();
  await agent.publish("heartbeat", { uptime: 1 }, {
    priority: 7,
    type: "event",
    correlationId: "c-1",
  });
  const r = await gw.waitFor((r) => r.header.type === "msg");
  assert.equal(r.header.ch, `agent.${key.id}.heartbeat`);
  assert.equal(r.header.prio, 7);
  assert.equal(r.header.mt, "event");
  assert.equal(r.header.cid, "c-1");
  assert.deepEqual(r.payload, { uptime: 1 });
  assert.equal(r.signature, undefined);
  assert.equal(agent.stats().acked, 1);
  await agent.publish(`agent.${key.id}.heartbeat`, null);
  await assert.rejects(agent.publish("a..b", 1), RangeError);
  await assert.rejects(agent.publish("x", 1, { priority: 10 }), RangeError);
  await assert.rejects(agent.publish("backend.x.y", 1), RangeError);
});

Deno.test("client: a channel is the agent's own, by name or in full; another agent's is refused every time", async () => {
  await using t = await setup();
  const { gw, key, agent } = t;
  await agent.connect();
  for (let i = 0; i < 2; i++) {
    await assert.rejects(
      agent.publish(`agent.did:key:z6Mkother${i}.status`, {}),
      RangeError,
    );
    await assert.rejects(
      agent.publish("agent.did:key:z6Mkother.status", {}),
      /is not an agent\..*\{name\} channel/,
    );
    await agent.publish("status", { i });
    await agent.publish(`agent.${key.id}.status`, { i });
  }
  const chs = gw.received.filter((r) => r.header.type === "msg").map((r) =>
    r.header.ch
  );
  assert.deepEqual(chs, Array(4).fill(`agent.${key.id}.status`));
});

Deno.test("client: a publish the node never acknowledges rejects with timeout", async () => {
  await using t = await setup({ ackPublishes: false });
  await t.agent.connect();
  await assert.rejects(
    t.agent.publish("heartbeat", 1, { timeoutMs: 50 }),
    assertAgentError("timeout"),
  );
  assert.equal(t.agent.stats().inFlight, 0);
});

Deno.test("client: a publish outside the agent's roles rejects with forbidden", async () => {
  await using t = await setup({ publish: ["heartbeat"] });
  await t.agent.connect();
  await t.agent.publish("heartbeat", 1);
  await assert.rejects(
    t.agent.publish("secrets", 1),
    assertAgentError("forbidden"),
  );
});

Deno.test("client: messages on a signed channel carry an agent signature that verifies over header and body", async () => {
  await using t = await setup({}, { channels: { audit: { signed: true } } });
  const { gw, key, agent } = t;
  await agent.connect();
  await agent.publish("audit", { action: "reboot" });
  await agent.publish("plain", { n: 1 });
  await agent.publish("plain", { n: 2 }, { signed: true });
  const msgs = gw.received.filter((r) => r.header.type === "msg");
  assert.equal(msgs.length, 3);
  const publicRaw = Uint8Array.fromBase64(key.publicKey, {
    alphabet: "base64url",
  });
  for (const i of [0, 2]) {
    const m = msgs[i];
    assert.ok(m.signature, `message ${i} is signed`);
    assert.ok(
      await verifyMessageSignature(
        publicRaw,
        m.signature,
        m.headerBytes,
        m.body,
      ),
    );
    const tampered = m.body.slice();
    tampered[0] ^= 1;
    assert.equal(
      await verifyMessageSignature(
        publicRaw,
        m.signature,
        m.headerBytes,
        tampered,
      ),
      false,
    );
  }
  assert.equal(msgs[1].signature, undefined);
});

Deno.test("client: signed and unsigned calls made together leave in call order (signing does not let later ones overtake)", async () => {
  await using t = await setup({}, { channels: { audit: { signed: true } } });
  const { gw, agent } = t;
  await agent.connect();
  await Promise.all([
    agent.publish("audit", { n: 1 }),
    agent.publish("plain", { n: 2 }),
    agent.publish("audit", { n: 3 }),
    agent.publish("plain", { n: 4 }),
    agent.publish("plain", { n: 5 }),
  ]);
  const msgs = gw.received.filter((r) => r.header.type === "msg");
  assert.deepEqual(
    msgs.map((
      m,
    ) => [JSON.parse(new TextDecoder().decode(m.body)).n, !!m.signature]),
    [[1, true], [2, false], [3, true], [4, false], [5, false]],
  );
});

// ----------------------------------------------------------- subscribing

Deno.test("client: subscribe resolves on ok and rejects with forbidden outside the roles", async () => {
  await using t = await setup({ subscribe: ["commands"] });
  const { gw, key, agent } = t;
  await agent.connect();
  const sub = await agent.subscribe("commands", () => {});
  assert.equal(sub.channel, `backend.${key.id}.commands`);
  await assert.rejects(
    agent.subscribe("admin", () => {}),
    (err: unknown) => {
      assertAgentError("forbidden")(err);
      assert.match((err as Error).message, /admin/);
      return true;
    },
  );
  await assert.rejects(agent.subscribe("commands", () => {}), TypeError);
  await assert.rejects(agent.subscribe("a..b", () => {}), RangeError);
  await sub.unsubscribe();
  await gw.waitFor((r) => r.header.type === "unsub");
  // Renewals after a reconnect are only for what is still subscribed.
  await agent.subscribe(`backend.${key.id}.commands`, () => {});
  gw.kick(key.id);
  await until(() => gw.handshakes.length === 2, "the reconnect");
  const sid = await until(() => gw.sessionOf(key.id), "the new session");
  const renewed = await gw.waitFor((r) =>
    r.sid === sid && r.header.type === "sub"
  );
  assert.equal(renewed.header.ch, `backend.${key.id}.commands`);
  await sleep(20);
  assert.equal(
    gw.received.filter((r) => r.sid === sid && r.header.type === "sub").length,
    1,
  );
});

Deno.test("client: a backend message reaches its handler once and is acknowledged each time it comes", async () => {
  await using t = await setup();
  const { gw, key, agent } = t;
  const seen: unknown[] = [];
  await agent.connect();
  await agent.subscribe("commands", (m) => {
    seen.push(m.payload);
    assert.equal(m.type, "command");
    assert.equal(m.priority, 6);
    assert.equal(m.name, "commands");
    assert.equal(m.signed, false);
  });
  const acks = () =>
    gw.received.filter((r) => r.header.type === "ack" && r.header.re === "m-1")
      .length;
  gw.send(key.id, "commands", { run: 1 }, {
    id: "m-1",
    priority: 6,
    type: "command",
  });
  await until(() => acks() === 1, "the first ack");
  gw.send(key.id, "commands", { run: 1 }, {
    id: "m-1",
    priority: 6,
    type: "command",
  });
  await until(() => acks() === 2, "the second ack");
  assert.deepEqual(seen, [{ run: 1 }]);
  assert.equal(agent.stats().duplicates, 1);
  assert.equal(agent.stats().delivered, 1);
  const ack = gw.received.find((r) => r.header.type === "ack")!;
  assert.equal(ack.header.ch, `backend.${key.id}.commands`);
  assert.equal(ack.body.length, 0);
});

Deno.test("client: a node that takes several ids per ack gets a burst's acks in fewer records, each id once and in order; a node that does not, one ack each", async () => {
  for (const acks of [undefined, 256]) {
    await using t = await setup({ acks });
    const { gw, key, agent } = t;
    const seen: string[] = [];
    await agent.connect();
    await agent.subscribe("commands", (m) => void seen.push(m.id));
    const ids = Array.from({ length: 30 }, (_, i) => `m-${i}`);
    for (const id of ids) gw.send(key.id, "commands", 0, { id });
    await until(
      () => gw.outbox(key.id).length === 0,
      `every message acknowledged (acks ${acks})`,
    );
    const records = gw.received.filter((r) => r.header.type === "ack");
    const acked = records.flatMap((r) => [
      r.header.re,
      ...(Array.isArray(r.payload) ? r.payload : []),
    ]);
    assert.deepEqual(acked, ids);
    assert.deepEqual(seen, ids);
    for (const r of records) {
      assert.equal(r.header.ch, `backend.${key.id}.commands`);
    }
    if (acks === undefined) {
      assert.equal(records.length, 30);
      assert.ok(records.every((r) => r.body.length === 0));
    } else {
      // Sent in one tick, read in a few: far fewer records than messages.
      assert.ok(records.length < 30, `${records.length} ack records`);
    }
  }
});

Deno.test("client: a burst in sealed batch frames is handled in order and every message acknowledged, in fewer frames than records; a node without sealed batches gets the same", async () => {
  for (const sealedBatches of [true, false]) {
    await using t = await setup({ acks: 256, sealedBatches });
    const { gw, key, agent } = t;
    const seen: string[] = [];
    await agent.connect();
    await agent.subscribe("commands", (m) => void seen.push(m.id));
    const before = agent.stats();
    const ids = Array.from({ length: 40 }, (_, i) => `m-${i}`);
    for (const id of ids) gw.send(key.id, "commands", { id }, { id });
    await until(
      () => gw.outbox(key.id).length === 0,
      `every message acknowledged (sealedBatches ${sealedBatches})`,
    );
    assert.deepEqual(seen, ids);
    const after = agent.stats();
    const frames = after.framesIn - before.framesIn;
    const records = after.recordsIn - before.recordsIn;
    assert.ok(records >= 40, `${records} records`);
    if (sealedBatches) assert.ok(frames < 10, `${frames} frames`);
    else assert.equal(frames, records, "a frame per record");
  }
});

Deno.test("client: a sealed batch frame that is tampered with, replayed, or whose inner length runs past it closes the connection with 4403; nothing of a tampered one is handled", async () => {
  const cases: [string, (s: RecordSealer, w: BatchWriter) => Uint8Array][] = [
    ["tampered", (s, w) => {
      const f = s.sealBatch(w.bytes());
      f[f.length - 20] ^= 1;
      return f;
    }],
    [
      "truncated inner",
      (s, w) => s.sealBatch(w.bytes().subarray(0, w.length - 1)),
    ],
  ];
  for (const [what, build] of cases) {
    await using t = await setup();
    const { gw, key, agent, events } = t;
    const seen: string[] = [];
    await agent.connect();
    await agent.subscribe("commands", (m) => void seen.push(m.id));
    gw.sendFrame(key.id, (sealer, address) => {
      const w = new BatchWriter();
      w.add({
        ...address,
        ch: `backend.${key.id}.commands`,
        type: "msg",
        id: "x-1",
      }, new Uint8Array(0));
      w.add({
        ...address,
        ch: `backend.${key.id}.commands`,
        type: "msg",
        id: "x-2",
      }, new Uint8Array([0x31]));
      return build(sealer, w);
    });
    const closed = await until(
      () => events.find((e) => e.type === "disconnected"),
      `the drop after a ${what} frame`,
    );
    assert.equal((closed.event as { code: number }).code, 4403, what);
    assert.deepEqual(seen, what === "tampered" ? [] : ["x-1"], what);
  }
  await using t = await setup();
  const { gw, key, agent, events } = t;
  const seen: string[] = [];
  await agent.connect();
  await agent.subscribe("commands", (m) => void seen.push(m.id));
  const frame = gw.sendFrame(key.id, (sealer, address) => {
    const w = new BatchWriter();
    w.add({
      ...address,
      ch: `backend.${key.id}.commands`,
      type: "msg",
      id: "r-1",
    }, new Uint8Array([0x31]));
    return sealer.sealBatch(w.bytes());
  });
  await gw.waitFor((r) => r.header.type === "ack" && r.header.re === "r-1");
  gw.sendFrame(key.id, () => frame);
  const closed = await until(
    () => events.find((e) => e.type === "disconnected"),
    "the drop after a replayed frame",
  );
  assert.equal((closed.event as { code: number }).code, 4403);
  assert.match((closed.event as { reason: string }).reason, /already received/);
  assert.deepEqual(seen, ["r-1"]);
});

Deno.test('client: a message whose header says "ack": 0 (not stored by the node) is neither acknowledged nor remembered as handled; others still are', async () => {
  for (const acks of [undefined, 256]) {
    await using t = await setup({ acks });
    const { gw, key, agent } = t;
    const seen: string[] = [];
    await agent.connect();
    await agent.subscribe("commands", (m) => void seen.push(m.id));
    gw.send(key.id, "commands", 1, { id: "e-1", durable: false, noAck: true });
    gw.send(key.id, "commands", 1, { id: "e-1", durable: false, noAck: true });
    gw.send(key.id, "commands", 2, { id: "d-1" });
    const ids = (
      r: { header: { type: string; re?: unknown }; body: Uint8Array },
    ) =>
      r.header.type !== "ack" ? [] : [
        r.header.re,
        ...(r.body.length ? JSON.parse(new TextDecoder().decode(r.body)) : []),
      ];
    await until(
      () => gw.received.some((r) => ids(r).includes("d-1")),
      "the durable message's ack",
    );
    assert.deepEqual(
      seen,
      ["e-1", "e-1", "d-1"],
      `acks ${acks}: each push handled`,
    );
    assert.equal(
      gw.received.some((r) => ids(r).includes("e-1")),
      false,
      `acks ${acks}: no ack of e-1`,
    );
  }
});

Deno.test("client: an ack due when the node closes the connection is sent first on the next one", async () => {
  await using t = await setup({ acks: 256 });
  const { gw, key, agent } = t;
  let release!: () => void;
  const held = new Promise<void>((r) => release = r);
  let started = false;
  await agent.connect();
  await agent.subscribe("commands", async () => {
    started = true;
    await held;
  });
  const first = gw.sessionOf(key.id)!;
  gw.send(key.id, "commands", { run: 1 }, { id: "c-1", durable: false });
  await until(() => started, "the handler to start");
  gw.kick(key.id, 1001, "node going away");
  release(); // the handler ends while the connection is gone: its ack is due
  const ack = await gw.waitFor((r) =>
    r.header.type === "ack" && r.header.re === "c-1"
  );
  assert.notEqual(ack.sid, first, "sent on the next connection");
  assert.equal(agent.stats().delivered, 1);
});

Deno.test("client: a throwing handler leaves the message unacknowledged; the redelivery is handled and acknowledged", async () => {
  await using t = await setup();
  const { gw, key, agent, events } = t;
  let calls = 0;
  await agent.connect();
  await agent.subscribe("commands", () => {
    if (++calls === 1) throw new Error("disk full");
  });
  gw.send(key.id, "commands", { run: 2 }, { id: "m-2" });
  await until(() => calls === 1, "the first call");
  await sleep(30);
  assert.equal(
    gw.received.some((r) => r.header.type === "ack"),
    false,
    "no ack after a throw",
  );
  assert.deepEqual(gw.outbox(key.id), ["m-2"]);
  assert.equal(agent.stats().handlerErrors, 1);
  assert.ok(events.some((e) => e.type === "error"));
  gw.kick(key.id); // the gateway redelivers its outbox on the next handshake
  await gw.waitFor((r) => r.header.type === "ack" && r.header.re === "m-2");
  assert.equal(calls, 2);
  assert.deepEqual(gw.outbox(key.id), []);
});

Deno.test("client: handlers run one message at a time per channel, in arrival order", async () => {
  await using t = await setup();
  const { gw, key, agent } = t;
  const log: string[] = [];
  await agent.connect();
  await agent.subscribe("commands", async (m) => {
    log.push(`start ${m.id}`);
    await sleep(10);
    log.push(`end ${m.id}`);
  });
  for (const id of ["a", "b", "c"]) gw.send(key.id, "commands", 0, { id });
  await until(() => log.length === 6, "three messages");
  assert.deepEqual(log, [
    "start a",
    "end a",
    "start b",
    "end b",
    "start c",
    "end c",
  ]);
});

Deno.test("client: a handler's promise holds its channel: later messages wait for it; a rejected one is not acknowledged", async () => {
  await using t = await setup();
  const { gw, key, agent } = t;
  const log: string[] = [];
  const gate = Promise.withResolvers<void>();
  await agent.connect();
  // Synchronous for c, a promise for a (pending) and b (rejected).
  await agent.subscribe("commands", (m) => {
    log.push(m.id);
    if (m.id === "a") return gate.promise;
    if (m.id === "b") return Promise.reject(new Error("no"));
  });
  const before = agent.stats().recordsIn;
  for (const id of ["a", "b", "c"]) gw.send(key.id, "commands", 0, { id });
  await until(() => agent.stats().recordsIn >= before + 3, "three records");
  assert.deepEqual(log, ["a"], "b and c wait for a's promise");
  gate.resolve();
  await until(() => gw.outbox(key.id).length === 1, "a and c acknowledged");
  assert.deepEqual(log, ["a", "b", "c"]);
  assert.deepEqual(gw.outbox(key.id), ["b"]);
  assert.equal(agent.stats().handlerErrors, 1);
});

Deno.test("client: a repeat that arrives while its message's handler runs is not handled again; after a rejected promise the repeat is handled", async () => {
  await using t = await setup();
  const { gw, key, agent } = t;
  const calls: string[] = [];
  const gate = Promise.withResolvers<void>();
  await agent.connect();
  await agent.subscribe("commands", (m) => {
    calls.push(m.id);
    if (m.id === "p") return gate.promise;
    if (m.id === "r" && calls.length === 2) {
      return Promise.reject(new Error("not now"));
    }
  });
  const before = agent.stats().recordsIn;
  gw.send(key.id, "commands", 0, { id: "p", durable: false });
  gw.send(key.id, "commands", 0, { id: "p", durable: false });
  await until(() => agent.stats().recordsIn >= before + 2, "both copies");
  gate.resolve();
  await until(() => agent.stats().duplicates === 1, "the repeat dropped");
  assert.deepEqual(calls, ["p"]);
  gw.send(key.id, "commands", 0, { id: "r", durable: false });
  await until(() => agent.stats().handlerErrors === 1, "the rejection");
  gw.send(key.id, "commands", 0, { id: "r", durable: false });
  await until(() => calls.length === 3, "the repeat of r");
  assert.deepEqual(calls, ["p", "r", "r"]);
  assert.equal(agent.stats().duplicates, 1);
});

Deno.test("client: a message that arrives before its channel has a handler is held until one is registered", async () => {
  await using t = await setup();
  const { gw, key, agent } = t;
  await agent.connect();
  gw.send(key.id, "late", { n: 1 }, { id: "m-late" });
  await until(() => agent.stats().unhandled === 1, "the held message");
  assert.equal(gw.received.some((r) => r.header.type === "ack"), false);
  const seen: unknown[] = [];
  await agent.subscribe("late", (m) => {
    seen.push(m.payload);
  });
  await gw.waitFor((r) => r.header.type === "ack" && r.header.re === "m-late");
  assert.deepEqual(seen, [{ n: 1 }]);
});

Deno.test("client: a node-signed message is verified; one with a bad signature is dropped unacknowledged", async () => {
  await using t = await setup();
  const { gw, key, agent, events } = t;
  const seen: { id: string; signed: boolean }[] = [];
  await agent.connect();
  await agent.subscribe("policies", (m) => {
    seen.push({ id: m.id, signed: m.signed });
  });
  gw.send(key.id, "policies", { v: 1 }, { id: "s-good", signed: true });
  await gw.waitFor((r) => r.header.type === "ack" && r.header.re === "s-good");
  gw.send(key.id, "policies", { v: 2 }, { id: "s-bad", signed: "bad" });
  await until(() => agent.stats().badSignatures === 1, "the refused record");
  await sleep(30);
  assert.deepEqual(seen, [{ id: "s-good", signed: true }]);
  assert.equal(
    gw.received.some((r) => r.header.type === "ack" && r.header.re === "s-bad"),
    false,
  );
  const err = events.find((e) => e.type === "error")!.event as AgentEvents[
    "error"
  ];
  assert.equal(err.context, "signature");
  assert.equal(
    agent.state,
    "ready",
    "a bad signature does not drop the session",
  );
});

// ------------------------------------------------------- request / reply

Deno.test("client: request resolves with the node's res and rejects with its err or on timeout", async () => {
  await using t = await setup({
    onRequest: (r) => {
      const name = r.header.ch.split(".").at(-1);
      if (name === "fail") throw { code: "bad_request", message: "nope" };
      if (name === "slow") return new Promise(() => {});
      return { echo: r.payload };
    },
  });
  const { gw, agent } = t;
  await agent.connect();
  assert.deepEqual(await agent.request("config", { a: 1 }), {
    echo: { a: 1 },
  });
  const req = await gw.waitFor((r) => r.header.type === "req");
  assert.equal(req.header.prio, 4);
  await assert.rejects(
    agent.request("fail", {}),
    (err: unknown) => {
      assertAgentError("bad_request")(err);
      assert.match((err as Error).message, /nope/);
      return true;
    },
  );
  await assert.rejects(
    agent.request("slow", {}, { timeoutMs: 50 }),
    assertAgentError("timeout"),
  );
});

Deno.test("client: a request in flight when the connection drops fails with unavailable and is not resent", async () => {
  await using t = await setup({ onRequest: () => new Promise(() => {}) });
  const { gw, key, agent } = t;
  await agent.connect();
  const p = agent.request("slow", {});
  await gw.waitFor((r) => r.header.type === "req");
  gw.kick(key.id);
  await assert.rejects(p, assertAgentError("unavailable"));
  await until(
    () => agent.state === "ready" && gw.handshakes.length === 2,
    "reconnect",
  );
  await sleep(20);
  assert.equal(gw.received.filter((r) => r.header.type === "req").length, 1);
});

Deno.test("client: handle answers backend requests with res, err and no_handler", async () => {
  await using t = await setup();
  const { gw, key, agent } = t;
  await agent.connect();
  await agent.handle("jobs", (r) => {
    const p = r.payload as { n?: number; fail?: string };
    if (p.fail === "typed") throw new AgentError("bad_request", "bad job");
    if (p.fail) throw new Error("crashed");
    return { done: p.n };
  });
  assert.deepEqual(await gw.request(key.id, "jobs", { n: 1 }), {
    type: "res",
    payload: { done: 1 },
  });
  assert.deepEqual(await gw.request(key.id, "jobs", { fail: "typed" }), {
    type: "err",
    payload: { code: "bad_request", message: "bad job" },
  });
  assert.deepEqual(await gw.request(key.id, "jobs", { fail: "plain" }), {
    type: "err",
    payload: { code: "unavailable", message: "crashed" },
  });
  const none = await gw.request(key.id, "other", {});
  assert.equal(none.type, "err");
  assert.equal((none.payload as { code: string }).code, "no_handler");
  const bad = await gw.request(key.id, "jobs", { n: 2 }, { signed: "bad" });
  assert.equal((bad.payload as { code: string }).code, "bad_request");
  assert.deepEqual(
    await gw.request(key.id, "jobs", { n: 3 }, { signed: true }),
    { type: "res", payload: { done: 3 } },
  );
  const res = gw.received.find((r) => r.header.type === "res")!;
  assert.equal(res.header.ch, `backend.${key.id}.jobs`);
});

// ------------------------------------------------ reconnects and the queue

Deno.test("client: after a dropped connection it reconnects, subscribes again, then sends queued calls by priority", async () => {
  await using t = await setup();
  const { gw, key, agent } = t;
  // Registered before connect(): it settles after the first handshake.
  const subscribed = agent.subscribe("commands", () => {});
  await agent.connect();
  await subscribed;
  gw.refusing = true;
  gw.kick(key.id);
  await until(() => agent.state !== "ready", "the disconnect");
  const sends = [
    agent.publish("events", "p1", { priority: 1 }),
    agent.publish("events", "p4a"),
    agent.publish("events", "p9", { priority: 9 }),
    agent.publish("events", "p4b"),
  ];
  assert.equal(agent.stats().queued, 4);
  await sleep(60); // a few refused attempts
  assert.ok(agent.stats().failedAttempts >= 1);
  gw.refusing = false;
  await Promise.all(sends);
  const sid = gw.sessionOf(key.id)!;
  const after = gw.received.filter((r) => r.sid === sid);
  assert.deepEqual(
    after.map((r) => r.header.type === "sub" ? "sub" : r.payload),
    ["sub", "p9", "p4a", "p4b", "p1"],
  );
});

Deno.test("client: an unacknowledged publish is sent again after a reconnect, with the same id", async () => {
  await using t = await setup({ ackPublishes: false });
  const { gw, key, agent } = t;
  await agent.connect();
  const p = agent.publish("events", { n: 1 });
  const first = await gw.waitFor((r) => r.header.type === "msg");
  gw.ackPublishes = true;
  gw.kick(key.id);
  await p;
  const all = gw.received.filter((r) => r.header.type === "msg");
  assert.equal(all.length, 2);
  assert.equal(all[1].header.id, first.header.id);
  assert.notEqual(all[1].sid, first.sid);
  assert.equal(agent.stats().resent, 1);
});

Deno.test("client: a full queue keeps the most urgent, oldest calls: an equal priority is refused, a lower one dropped", async () => {
  await using t = await setup({}, { maxQueued: 3 });
  const { gw, agent } = t;
  // Not connected yet: everything waits in the queue.
  const a = agent.publish("events", "a");
  const b = agent.publish("events", "b");
  const c = agent.publish("events", "c");
  await assert.rejects(
    agent.publish("events", "d"),
    assertAgentError("queue_full"),
  );
  const e = agent.publish("events", "e", { priority: 9 });
  await assert.rejects(c, assertAgentError("queue_full"));
  assert.equal(agent.stats().dropped, 2);
  assert.equal(agent.stats().queued, 3);
  await agent.connect();
  await Promise.all([a, b, e]);
  assert.deepEqual(
    gw.received.filter((r) => r.header.type === "msg").map((r) => r.payload),
    ["e", "a", "b"],
  );
});

// --------------------------------------------------------------- heartbeat

Deno.test("client: answers the node's pings and pings the node every heartbeat", async () => {
  await using t = await setup({ heartbeatMs: 40 });
  const { gw, key, agent } = t;
  await agent.connect();
  await gw.ping(key.id);
  await gw.waitFor((r) => r.header.type === "ping" && r.header.ch === "");
  await until(() => agent.stats().pongsReceived >= 1, "a pong");
  assert.equal(agent.state, "ready");
});

Deno.test("client: a connection silent for twice the heartbeat is given up and replaced", async () => {
  await using t = await setup({}, { heartbeatMs: 40 });
  const { gw, key, agent, events } = t;
  await agent.connect();
  gw.mute(key.id);
  await until(
    () => gw.handshakes.length === 2 && agent.state === "ready",
    "the new connection",
  );
  assert.equal(agent.stats().deadConnections, 1);
  const d = events.find((e) => e.type === "disconnected")!
    .event as AgentEvents["disconnected"];
  assert.equal(d.code, 4408);
  assert.equal(d.byNode, false);
});

// ------------------------------------------------------------------ close

Deno.test("client: close() waits for outstanding publishes, then rejects what is left with closed", async () => {
  await using t = await setup({}, { drainMs: 50 });
  const { gw, agent, events } = t;
  await agent.connect();
  gw.ackPublishes = false;
  const p = agent.publish("events", 1);
  await gw.waitFor((r) => r.header.type === "msg");
  const rejected = assert.rejects(p, assertAgentError("closed"));
  const started = Date.now();
  await agent.close();
  assert.ok(Date.now() - started >= 40, "waited for the drain");
  await rejected;
  assert.equal(agent.state, "closed");
  await assert.rejects(agent.connect(), assertAgentError("closed"));
  await assert.rejects(agent.publish("events", 2), assertAgentError("closed"));
  const closed = events.find((e) => e.type === "closed")!.event as AgentEvents[
    "closed"
  ];
  assert.equal(closed.code, 1000);
  assert.equal(closed.error, undefined);
  await agent.close(); // idempotent
});

// ---------------------------------------------------------------- key files

Deno.test("client: parseAgentKey refuses a publicKey or did:key id of another key", async () => {
  const a = await generateAgentKey();
  const b = await generateAgentKey();
  await assert.rejects(
    parseAgentKey(JSON.stringify({ ...a, publicKey: b.publicKey })),
    /publicKey does not belong/,
  );
  await assert.rejects(
    parseAgentKey(JSON.stringify({ ...a, id: b.id })),
    /did:key id does not belong/,
  );
  await assert.rejects(parseAgentKey("not a key"), /base64url of 32 bytes/);
  await assert.rejects(parseAgentKey("{oops"), /not valid JSON/);
  const named = await parseAgentKey(
    JSON.stringify({ id: "agent-7", privateKey: a.privateKey }),
  );
  assert.equal(named.id, "agent-7");
  assert.equal(named.publicKey, a.publicKey);
});
