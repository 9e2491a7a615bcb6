import assert from "node:assert/strict";
import { createEnvelope, type Envelope } from "./envelope.ts";
import type { Transport } from "./transport.ts";
import { ConfigError } from "./config.ts";
import {
  checkRouting,
  dedupKey,
  type IdempotentDelivery,
  patternCovers,
  patternsOverlap,
  routedTransport,
} from "./transport_routing.ts";
import {
  MemoryBroker,
  memoryTransport,
  stopBroker,
} from "../testing/memory_transport.ts";

const msg = (topic: string, payload: unknown = 1): Envelope =>
  createEnvelope({ type: "event", topic, source: "test", payload });

/** A memory transport that declares itself durable (for the guarantee checks). */
function durable(broker: MemoryBroker): Transport {
  const t = memoryTransport({ broker });
  return Object.assign(Object.create(t), {
    caps: { ...t.caps, durable: true },
  });
}

function deferred<T = void>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

Deno.test("routing: patterns overlap and cover as NATS wildcards do", () => {
  assert.ok(patternsOverlap("orders.>", "orders.created"));
  assert.ok(patternsOverlap("orders.*", "*.created"));
  assert.ok(patternsOverlap(">", "a.b.c"));
  assert.ok(!patternsOverlap("orders.>", "orders"));
  assert.ok(!patternsOverlap("orders.*", "orders.a.b"));
  assert.ok(!patternsOverlap("orders.>", "agents.>"));
  assert.ok(patternCovers("orders.>", "orders.*.x"));
  assert.ok(patternCovers("*.*", "orders.created"));
  assert.ok(!patternCovers("orders.*", "orders.>"));
  assert.ok(!patternCovers("orders.created", "orders.*"));
});

Deno.test("routing: an unknown transport or a guarantee its transport cannot give is refused, naming rule, transport and capability", () => {
  const mem = memoryTransport().caps;
  assert.throws(
    () =>
      checkRouting({ rules: [{ pattern: "orders.>", transport: "kafka" }] }, {
        memory: mem,
      }),
    (e: Error) =>
      e instanceof ConfigError &&
      e.message ===
        "routing.rules[0] ('orders.>' → kafka): unknown transport 'kafka' (loaded: memory)",
  );
  assert.throws(
    () =>
      checkRouting({
        rules: [{
          pattern: "orders.>",
          transport: "memory",
          delivery: "at-least-once",
        }],
      }, { memory: mem }),
    (e: Error) =>
      e.message ===
        "routing.rules[0] ('orders.>' → memory): delivery 'at-least-once' on transport 'memory' needs durable (it declares durable: false)",
  );
  assert.throws(
    () =>
      checkRouting(
        {
          rules: [{ pattern: "a.>", transport: "d", delivery: "exactly-once" }],
        },
        { d: { ...mem, durable: true } },
        { hasKv: false },
      ),
    /needs a KV dedup store/,
  );
  checkRouting({
    rules: [{ pattern: "a.>", transport: "memory", delivery: "at-most-once" }],
  }, { memory: mem });
});

Deno.test("routing: publish goes to the first matching rule's transport, else the default; subscriptions hear each where it is routed", async () => {
  const a = new MemoryBroker();
  const b = new MemoryBroker();
  const direct = {
    a: memoryTransport({ broker: a }),
    b: memoryTransport({ broker: b }),
  };
  const t = routedTransport({
    transports: {
      a: memoryTransport({ broker: a }),
      b: memoryTransport({ broker: b }),
    },
    rules: [
      { pattern: "orders.>", transport: "b", delivery: "at-most-once" },
      { pattern: "orders.created", transport: "a", delivery: "at-most-once" },
    ],
    default: "a",
    defaultDelivery: "at-most-once",
  });
  try {
    const onA: string[] = [];
    const onB: string[] = [];
    const topics = ["orders.created", "orders.paid", "agents.joined"];
    for (const topic of topics) {
      await direct.a.subscribe(topic, (d) => {
        onA.push(d.topic);
        return Promise.resolve();
      });
      await direct.b.subscribe(topic, (d) => {
        onB.push(d.topic);
        return Promise.resolve();
      });
    }
    const heard: string[] = [];
    const all = deferred();
    for (const topic of topics) {
      await t.subscribe(topic, (d) => {
        heard.push(d.topic);
        if (heard.length === 3) all.resolve();
        return Promise.resolve();
      });
    }
    for (const topic of topics) await t.publish(topic, msg(topic));
    await all.promise;
    assert.deepEqual(heard.sort(), [
      "agents.joined",
      "orders.created",
      "orders.paid",
    ]);
    assert.deepEqual(onB.sort(), ["orders.created", "orders.paid"]);
    assert.deepEqual(onA, ["agents.joined"]);
    assert.equal(t.route("orders.created").rule, 0);
    assert.equal(t.route("x").rule, -1);
  } finally {
    await t.close();
    await direct.a.close();
    await direct.b.close();
    stopBroker(a);
    stopBroker(b);
  }
});

Deno.test("routing: a topic no rule matches, with no default, is refused at publish", async () => {
  const t = routedTransport({
    transports: { a: memoryTransport(), b: memoryTransport() },
    rules: [{ pattern: "orders.>", transport: "b", delivery: "at-most-once" }],
  });
  await assert.rejects(
    () => t.publish("agents.x", msg("agents.x")),
    /no routing rule matches topic 'agents.x' and there is no default transport/,
  );
  await t.close();
});

Deno.test("routing: at-most-once acks before the handler, so a throwing handler's message is not redelivered", async () => {
  const broker = new MemoryBroker();
  const dropped: string[] = [];
  const t = routedTransport({
    transports: { m: memoryTransport({ broker }) },
    defaultDelivery: "at-most-once",
    onDropped: ({ id }) => dropped.push(id),
  });
  try {
    let calls = 0;
    const settledAtCall: boolean[] = [];
    const second = deferred();
    await t.subscribe("t", (d) => {
      calls++;
      settledAtCall.push(d.settled);
      if (d.envelope.payload === 2) second.resolve();
      return Promise.reject(new Error("boom"));
    }, { group: "g" });
    const m = msg("t", 1);
    await t.publish("t", m);
    await t.publish("t", msg("t", 2));
    await second.promise;
    assert.equal(calls, 2, "the first message was redelivered");
    assert.deepEqual(settledAtCall, [true, true]);
    assert.equal(dropped[0], m.id);
  } finally {
    await t.close();
    stopBroker(broker);
  }
});

Deno.test("routing: a copy of a handled message id is acked without calling the handler", async () => {
  const broker = new MemoryBroker();
  const dups: string[] = [];
  const t = routedTransport({
    transports: { m: durable(broker) },
    onDuplicate: ({ id }) => dups.push(id),
  });
  try {
    const handled: unknown[] = [];
    const last = deferred();
    await t.subscribe("t", (d) => {
      handled.push(d.envelope.payload);
      if (d.envelope.payload === "end") last.resolve();
      return Promise.resolve();
    }, { group: "g" });
    const m = msg("t", "once");
    await t.publish("t", m);
    await t.publish("t", m);
    await t.publish("t", msg("t", "end"));
    await last.promise;
    assert.deepEqual(handled, ["once", "end"]);
    assert.deepEqual(dups, [m.id]);
  } finally {
    await t.close();
    stopBroker(broker);
  }
});

Deno.test("routing: a message naked by its handler is handled again (it is not taken for a duplicate)", async () => {
  const broker = new MemoryBroker();
  const t = routedTransport({ transports: { m: durable(broker) } });
  try {
    let calls = 0;
    const twice = deferred();
    await t.subscribe("t", (d) => {
      if (++calls === 1) return d.nak(0, "not yet");
      twice.resolve();
      return Promise.resolve();
    }, { group: "g" });
    await t.publish("t", msg("t"));
    await twice.promise;
    assert.equal(calls, 2);
  } finally {
    await t.close();
    stopBroker(broker);
  }
});

Deno.test("routing: exactly-once marks the message done with the handler's own writes; a redelivery after a failure past the commit skips the handler", async () => {
  const broker = new MemoryBroker();
  const kv = await Deno.openKv(":memory:");
  const duplicate = deferred<string>();
  const t = routedTransport({
    transports: { m: durable(broker) },
    rules: [{ pattern: "pay.>", transport: "m", delivery: "exactly-once" }],
    kv,
    onDuplicate: ({ id }) => duplicate.resolve(id),
  });
  try {
    await assert.rejects(
      () => t.subscribe("pay.in", () => Promise.resolve()),
      /needs a group: rule 'pay.>' is exactly-once/,
    );
    let calls = 0;
    await t.subscribe("pay.in", async (d) => {
      calls++;
      const op = (d as IdempotentDelivery).atomic();
      op.sum(["paid", d.envelope.id], 1n);
      assert.equal((await op.commit()).ok, true);
      // Fails after its writes landed, before the ack: the broker redelivers.
      throw new Error("crashed after commit");
    }, { group: "billing" });
    const m = msg("pay.in");
    await t.publish("pay.in", m);
    assert.equal(await duplicate.promise, m.id);
    assert.equal(calls, 1);
    assert.equal(
      (await kv.get<Deno.KvU64>(["paid", m.id])).value?.value,
      1n,
    );
    assert.notEqual(
      (await kv.get(dedupKey("billing", m.id))).versionstamp,
      null,
    );
  } finally {
    await t.close();
    kv.close();
    stopBroker(broker);
  }
});

Deno.test("routing: a bridge moves a family's backlog to another transport; every message is handled once", async () => {
  const a = new MemoryBroker();
  const b = new MemoryBroker();
  const t = routedTransport({
    transports: { a: durable(a), b: durable(b) },
    rules: [{ pattern: "orders.>", transport: "a" }],
    default: "b",
  });
  const peekB = memoryTransport({ broker: b });
  try {
    const topics = ["orders.0", "orders.1", "orders.2"];
    const onB: string[] = [];
    for (const topic of topics) {
      await peekB.subscribe(topic, (d) => {
        onB.push(d.envelope.id);
        return Promise.resolve();
      });
    }
    const gate = deferred();
    const handled = new Map<string, number>();
    const all = deferred();
    const ids: string[] = [];
    for (const topic of topics) {
      await t.subscribe(topic, async (d) => {
        await gate.promise;
        handled.set(d.envelope.id, (handled.get(d.envelope.id) ?? 0) + 1);
        if (ids.length === 40 && ids.every((id) => handled.has(id))) {
          all.resolve();
        }
      }, { group: "ship", maxInFlight: 1 });
    }
    for (let i = 0; i < 20; i++) {
      const m = msg(topics[i % 3], i);
      ids.push(m.id);
      await t.publish(m.topic, m);
    }
    const bridge = await t.bridge("orders.>", "b");
    assert.equal(t.route("orders.x").transport, "b");
    assert.deepEqual(bridge.drains.map((d) => d.topic), topics);
    for (let i = 20; i < 40; i++) {
      const m = msg(topics[i % 3], i);
      ids.push(m.id);
      await t.publish(m.topic, m);
    }
    gate.resolve();
    await all.promise;
    assert.deepEqual([...handled.values()].filter((n) => n !== 1), []);
    // The fake hands messages to members at publish, so it keeps no backlog
    // for the bridge to take (tests/integration/transports_bridge_test.ts
    // drains a real one).
    // Published after the switch or moved: all on b, none lost.
    for (const id of ids.slice(20)) assert.ok(onB.includes(id));
    await bridge.close();
    assert.deepEqual(t.bridges(), []);
  } finally {
    await t.close();
    await peekB.close();
    stopBroker(a);
    stopBroker(b);
  }
});
