import assert from "node:assert/strict";
import { PUSHED_MEMORY, QueueDelivery } from "./delivery.ts";
import { Outbox } from "../outbox.ts";

/** A delivery for agent-1 over `kv`, recording the ids it sends. */
async function testDelivery(kv: Deno.Kv, o: {
  channels: Record<string, { durable: boolean }>;
  subs: string[];
  sent: string[];
  shared?: string[];
  outbox?: Outbox;
  maxInFlight?: number;
  warnings?: unknown[];
  owner?: string;
}): Promise<QueueDelivery> {
  const { privateKey } = await crypto.subtle.generateKey("Ed25519", false, [
    "sign",
  ]) as CryptoKeyPair;
  return new QueueDelivery({
    config: {
      channels: o.channels,
      maxInFlight: o.maxInFlight ?? 8,
      ackTimeoutMs: 30_000,
    },
    outbox: o.outbox ?? new Outbox(kv),
    metrics: { delivery: () => {}, queueDepth: () => {} },
    log: o.warnings
      ? { warn: (...args: unknown[]) => void o.warnings!.push(args) }
      : console,
    signingKey: privateKey,
    owner: o.owner ?? "n1/c1",
    subs: new Set(o.subs),
    agentId: () => "agent-1",
    ready: () => true,
    congested: () => false,
    header: (f) => ({
      sid: "s1",
      from: "node:n1",
      to: "agent-1",
      ch: "",
      ...f,
    }),
    send: (h) => void o.sent.push(h.id),
    ...(o.shared
      ? { sendShared: (_ch, r) => void o.shared!.push(r.fields.id) }
      : {}),
    after: () => {},
    fail: (err) => {
      throw err;
    },
  });
}

Deno.test("delivery: pushed() answers for the last PUSHED_MEMORY ids pushed, oldest forgotten first; a repeat is not counted twice", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const sent: string[] = [];
    const delivery = await testDelivery(kv, {
      channels: { alerts: { durable: false } },
      subs: ["alerts"],
      sent,
    });
    const fields = (id: string) => ({ id, priority: 4, messageType: "n" });
    const body = new Uint8Array(0);
    await delivery.pushEphemeral("alerts", body, fields("first"));
    await delivery.pushEphemeral("alerts", body, fields("first")); // a repeat
    for (let i = 1; i < PUSHED_MEMORY; i++) {
      await delivery.pushEphemeral("alerts", body, fields(`m-${i}`));
    }
    assert.equal(sent.length, PUSHED_MEMORY + 1);
    assert.equal(delivery.pushed("first"), true, "the repeat took no slot");
    await delivery.pushEphemeral("alerts", body, fields("next"));
    assert.equal(delivery.pushed("first"), false, "the oldest went");
    assert.equal(delivery.pushed("m-1"), true);
    assert.equal(delivery.pushed("next"), true);
    await delivery.pushEphemeral("alerts", body, fields("after"));
    assert.equal(delivery.pushed("m-1"), false);
    assert.equal(delivery.pushed(`m-${PUSHED_MEMORY - 1}`), true);
    await delivery.stop(1000);
  } finally {
    kv.close();
  }
});

Deno.test("delivery: acks of more broadcasts than the early-ack memory holds do not push out an early ack of a durable message, which settles it when claimed", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const outbox = new Outbox(kv);
    const sent: string[] = [];
    const shared: string[] = [];
    const delivery = await testDelivery(kv, {
      channels: { alerts: { durable: false }, policies: { durable: true } },
      subs: ["alerts", "policies"],
      sent,
      shared,
      outbox,
    });
    const id = await outbox.put(
      "agent-1",
      "policies",
      new TextEncoder().encode("{}"),
    );
    delivery.ack(id); // processed in an earlier session: an early ack
    const body = new Uint8Array(0);
    for (let i = 0; i < PUSHED_MEMORY + 100; i++) {
      const fields = { id: `b-${i}`, priority: 4, messageType: "n" };
      assert.equal(await delivery.pushEphemeral("alerts", body, fields), true);
      delivery.ack(fields.id);
    }
    assert.equal(shared.length, PUSHED_MEMORY + 100);
    await delivery.pump();
    assert.deepEqual(sent, [], "settled by its early ack, not pushed");
    assert.equal(await outbox.depth("agent-1"), 0);
    await delivery.stop(1000);
  } finally {
    kv.close();
  }
});

Deno.test("delivery: an agent on 3 durable channels with maxInFlight 4 never holds more than 4 un-acked, and gets them highest priority first, then oldest, across channels", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const outbox = new Outbox(kv);
    const sent: string[] = [];
    const warnings: unknown[] = [];
    let acked = 0;
    let most = 0;
    const channels = ["a", "b", "c"];
    const delivery = await testDelivery(kv, {
      channels: Object.fromEntries(channels.map((c) => [c, { durable: true }])),
      subs: channels,
      sent,
      outbox,
      maxInFlight: 4,
      warnings,
    });
    // 20 on each channel, priorities mixed, put one after another: the
    // order expected is by priority, then by put.
    const put: { id: string; priority: number }[] = [];
    for (let i = 0; i < 20; i++) {
      for (const [k, ch] of channels.entries()) {
        const priority = (i * 7 + k * 3) % 10;
        const id = await outbox.put("agent-1", ch, new Uint8Array(1), {
          priority,
        });
        put.push({ id, priority });
      }
    }
    const expected = put.map((p, i) => ({ ...p, i }))
      .sort((a, b) => b.priority - a.priority || a.i - b.i)
      .map((p) => p.id);
    // The agent acks the oldest un-acked record after each pass.
    for (let pass = 0; acked < expected.length && pass < 200; pass++) {
      await delivery.pump();
      most = Math.max(most, sent.length - acked);
      if (sent.length > acked) delivery.ack(sent[acked++]);
    }
    assert.equal(most, 4, "at most maxInFlight un-acked at once");
    assert.deepEqual(sent, expected);
    for (let i = 0; i < 50 && await outbox.depth("agent-1") > 0; i++) {
      await delivery.pump();
    }
    assert.equal(await outbox.depth("agent-1"), 0);
    assert.deepEqual(warnings, []);
    await delivery.stop(1000);
  } finally {
    kv.close();
  }
});

Deno.test("delivery: a lease owner (node id and session) over 256 characters is refused when the delivery is made, not at each claim", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    await assert.rejects(
      testDelivery(kv, {
        channels: { policies: { durable: true } },
        subs: ["policies"],
        sent: [],
        owner: `${"n".repeat(250)}/${crypto.randomUUID()}`,
      }),
      /consumer name is 287 characters, over the limit of 256/,
    );
  } finally {
    kv.close();
  }
});
