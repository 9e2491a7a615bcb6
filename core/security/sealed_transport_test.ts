import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { z } from "zod";
import { createKernel } from "../kernel.ts";
import { createLogger } from "../observe/logger.ts";
import { createRouter } from "../router.ts";
import { transportPlugin } from "../transport_plugin.ts";
import { generateNodeKey } from "./node_key.ts";
import { createEnvelope, type Envelope } from "../envelope.ts";
import { createMetrics, type MetricsRegistry } from "../observe/metrics.ts";
import type { Clock } from "../clock.ts";
import { systemClock } from "../clock.ts";
import type { Delivery, Transport } from "../transport.ts";
import {
  MemoryBroker,
  memoryTransport,
  stopBroker,
} from "../../testing/memory_transport.ts";
import { waitFor } from "../../testing/conformance.ts";
import { generateKeyPair } from "./hpke.ts";
import {
  ReplayMemory,
  SEALED_FROM_HEADER,
  sealedOpener,
  sealedTransport,
  SEALING_POLICY,
  type SealingPolicy,
} from "./sealed_transport.ts";
import { freshSealingKeys, kvSealingDirectory } from "./sealing_keys.ts";
import { inspectSealed } from "./sealed_format.ts";
import {
  editSealed,
  flipCiphertext,
  flipSignature,
  PROOF_PLACE,
  sealedFields,
  withProofOf,
} from "./_sealed_testing.ts";

const SECRET = "tangerine-7731";
const policy: SealingPolicy = {
  topics: [
    { pattern: "orders.*", recipients: ["node:b", "node:c"] },
    { pattern: "audit.>", recipients: ["node:b", "node:nobody"] },
  ],
};

/** A broker, a shared directory, and nodes on them. */
async function rig() {
  const broker = new MemoryBroker();
  const kv = await Deno.openKv(":memory:");
  const directory = kvSealingDirectory(kv, { cacheMs: 0 });
  const raw = memoryTransport({ broker, maxMessageBytes: 1 << 20 });
  // What the broker was handed, as bytes.
  const stored: string[] = [];
  const closers: Transport[] = [raw];
  async function node(
    id: string,
    options: {
      publish?: boolean;
      clock?: Clock;
      policy?: SealingPolicy;
      /** This node's own directory view, caching lookups this long. @default {the shared one, uncached} */
      cacheMs?: number;
      /** The clock of that view's cache. @default {systemClock} */
      directoryClock?: Clock;
      /** Seal and open on the worker. @default {false} */
      worker?: boolean;
    } = {},
  ) {
    const ed = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
      "sign",
      "verify",
    ]) as CryptoKeyPair;
    const x25519 = await generateKeyPair();
    if (options.publish !== false) {
      await directory.publish(
        `node:${id}`,
        x25519.publicKey,
        new Uint8Array(await crypto.subtle.exportKey("raw", ed.publicKey)),
      );
    }
    const metrics = createMetrics("plexus_");
    const inner = memoryTransport({ broker, maxMessageBytes: 1 << 20 });
    const spy: Transport = {
      ...inner,
      name: inner.name,
      caps: inner.caps,
      publish(topic, envelope, opts) {
        stored.push(JSON.stringify(envelope));
        return inner.publish(topic, envelope, opts);
      },
      subscribe: inner.subscribe.bind(inner),
      deadLetters: inner.deadLetters!.bind(inner),
      close: inner.close.bind(inner),
    };
    const t = sealedTransport(spy, options.policy ?? policy, {
      id: `node:${id}`,
      signingKey: ed.privateKey,
      x25519,
      directory: options.cacheMs === undefined
        ? directory
        : kvSealingDirectory(kv, {
          cacheMs: options.cacheMs,
          clock: options.directoryClock,
        }),
    }, { metrics, clock: options.clock, worker: options.worker });
    closers.push(t);
    return { t, metrics, x25519, ed };
  }
  return {
    node,
    raw,
    stored,
    directory,
    async [Symbol.asyncDispose]() {
      for (const c of closers) await c.close();
      stopBroker(broker);
      kv.close();
    },
  };
}

function order(topic = "orders.created", fields: Partial<Envelope> = {}) {
  return createEnvelope({
    type: "event",
    topic,
    source: "shop",
    payload: { item: SECRET, qty: 2 },
    ...fields,
  });
}

/** Collects deliveries of `topic` on `t` (its own group). */
async function collect(t: Transport, topic: string, group: string) {
  const got: Delivery[] = [];
  await t.subscribe(topic, async (d) => {
    got.push(d);
    await d.ack();
  }, { group });
  return got;
}

function refused(metrics: MetricsRegistry, reason: string): number {
  return metrics.counter("plexus_sealed_refused_total", "").get({ reason });
}

async function deadReason(raw: Transport, topic: string, min = 1) {
  const dead = await waitFor(`a dead letter on ${topic}`, async () => {
    const d = await raw.deadLetters!(topic);
    return d.length >= min ? d : undefined;
  }, 5000);
  return dead.map((d) => d.reason);
}

Deno.test("sealed transport: every recipient gets the plaintext, the broker only ciphertext signed by the sender", async () => {
  await using r = await rig();
  const a = await r.node("a");
  const b = await r.node("b");
  const c = await r.node("c");
  const atB = await collect(b.t, "orders.created", "b");
  const atC = await collect(c.t, "orders.created", "c");
  const msg = order("orders.created", { headers: { tenant: "t1" } });
  await a.t.publish("orders.created", msg);
  await a.t.publish("orders.created", order());
  await waitFor(
    "both at b and c",
    () => atB.length === 2 && atC.length === 2,
    5000,
  );
  for (const d of [atB[0], atC[0]]) {
    assert.deepEqual(d.envelope.payload, { item: SECRET, qty: 2 });
    assert.equal(d.envelope.id, msg.id);
    assert.equal(d.envelope.headers[SEALED_FROM_HEADER], "node:a");
    // The format's header is the broker's business: not handed on.
    assert.deepEqual(d.envelope.headers, {
      tenant: "t1",
      [SEALED_FROM_HEADER]: "node:a",
    });
    assert.equal(d.topic, "orders.created");
    assert.equal(d.attempts, 1);
    assert.equal(d.settled, true);
  }
  assert.equal(r.stored.length, 2);
  for (const bytes of r.stored) {
    assert.ok(!bytes.includes(SECRET), bytes);
    assert.ok(!bytes.includes("qty"), bytes);
    const stored = JSON.parse(bytes);
    assert.equal(stored.headers["plexus-sealed"], "3");
    const payload = inspectSealed(stored.payload);
    assert.deepEqual(payload.recipients, ["node:b", "node:c"]);
    assert.equal(payload.from, "node:a");
    assert.equal(payload.format, 3);
  }
  // One session: both messages carry the same wraps, with nonces 0 and 1.
  const [p0, p1] = r.stored.map((s) => inspectSealed(JSON.parse(s).payload));
  assert.equal(p0.session, p1.session);
  assert.deepEqual([p0.n, p1.n], [0, 1]);
  assert.equal(
    a.metrics.counter("plexus_sealed_messages_total", "").get({
      op: "sealed",
    }),
    2,
  );
  assert.equal(
    b.metrics.counter("plexus_sealed_messages_total", "").get({
      op: "opened",
    }),
    2,
  );
});

Deno.test("sealed transport: a topic no rule matches passes through in the clear", async () => {
  await using r = await rig();
  const a = await r.node("a");
  const b = await r.node("b");
  const got = await collect(b.t, "news.daily", "b");
  await a.t.publish("news.daily", order("news.daily"));
  await waitFor("delivered", () => got.length === 1, 5000);
  assert.deepEqual(got[0].envelope.payload, { item: SECRET, qty: 2 });
  assert.ok(r.stored[0].includes(SECRET));
});

Deno.test("sealed transport: a node that is not a recipient refuses and dead-letters, and keeps serving", async () => {
  await using r = await rig();
  const a = await r.node("a");
  await r.node("b");
  await r.node("c");
  const d = await r.node("d");
  const got = await collect(d.t, "orders.created", "d");
  await a.t.publish("orders.created", order());
  const [reason] = await deadReason(r.raw, "orders.created");
  assert.match(reason, /^sealed not_recipient: 'node:d' is not among/);
  assert.equal(got.length, 0);
  assert.equal(refused(d.metrics, "not_recipient"), 1);
  // Still serving: a clear topic is delivered afterwards.
  const news = await collect(d.t, "news.daily", "d");
  await a.t.publish("news.daily", order("news.daily"));
  await waitFor("news delivered", () => news.length === 1, 5000);
});

Deno.test("sealed transport: publishing to a recipient without a published key, or with an envelope topic that is not the publish topic, is refused at the sender", async () => {
  await using r = await rig();
  const a = await r.node("a");
  await r.node("b");
  await assert.rejects(
    () => a.t.publish("audit.login", order("audit.login")),
    /recipient 'node:nobody' has no published sealing key \(rule 'audit.>'\)/,
  );
  await assert.rejects(
    () => a.t.publish("orders.created", order("orders.other")),
    /envelope topic 'orders.other' is not the topic 'orders.created'/,
  );
  assert.equal(r.stored.length, 0);
});

Deno.test("sealed transport: a recipient whose X25519 key is not the one published refuses with no_key", async () => {
  await using r = await rig();
  const a = await r.node("a");
  const b = await r.node("b");
  await r.node("c");
  // b's key was replaced in the directory by another (b lost its key file).
  const other = await generateKeyPair();
  await r.directory.publish(
    "node:b",
    other.publicKey,
    new Uint8Array(await crypto.subtle.exportKey("raw", b.ed.publicKey)),
  );
  const got = await collect(b.t, "orders.created", "b");
  await a.t.publish("orders.created", order());
  const [reason] = await deadReason(r.raw, "orders.created");
  assert.match(reason, /^sealed no_key: /);
  assert.equal(got.length, 0);
  assert.equal(refused(b.metrics, "no_key"), 1);
});

Deno.test("sealed transport: a sender keeps its session while the directory's answers are cached, and wraps a new one to a replaced key or after rotateAfterMessages", async () => {
  await using r = await rig();
  const only = (extra: Partial<SealingPolicy> = {}): SealingPolicy => ({
    topics: [{ pattern: "orders.*", recipients: ["node:b"] }],
    ...extra,
  });
  let ahead = 0;
  const directoryClock: Clock = {
    ...systemClock,
    mono: () => performance.now() + ahead,
  };
  const a = await r.node("a", {
    cacheMs: 60_000,
    directoryClock,
    policy: only({ rotateAfterMessages: 3 }),
  });
  const b = await r.node("b", { policy: only() });
  const got = await collect(b.t, "orders.created", "b");
  const sessionOf = (i: number) =>
    inspectSealed(JSON.parse(r.stored[i]).payload).session;
  await a.t.publish("orders.created", order());
  await a.t.publish("orders.created", order());
  assert.equal(sessionOf(1), sessionOf(0));
  await waitFor("both opened by b", () => got.length === 2, 5000);

  // b's key is replaced (b2 holds the new one); a's cached answer expires.
  const b2 = await r.node("b", { policy: only() });
  const got2 = await collect(b2.t, "orders.created", "b2");
  ahead = 61_000;
  await a.t.publish("orders.created", order());
  assert.notEqual(sessionOf(2), sessionOf(0));
  const fresh = await waitFor("b2 opens the message", () => got2[0], 5000);
  assert.equal(fresh.envelope.id, JSON.parse(r.stored[2]).id);
  assert.deepEqual(fresh.envelope.payload, { item: SECRET, qty: 2 });

  // rotateAfterMessages 3: the fourth message of a session starts another.
  for (let i = 0; i < 3; i++) await a.t.publish("orders.created", order());
  assert.equal(sessionOf(4), sessionOf(2));
  assert.notEqual(sessionOf(5), sessionOf(4));
  await waitFor("b2 opens all four", () => got2.length === 4, 5000);
});

Deno.test("sealed transport: a tampered ciphertext or envelope field fails the sender's signature", async () => {
  await using r = await rig();
  const a = await r.node("a");
  const b = await r.node("b");
  await r.node("c");
  const got = await collect(b.t, "orders.created", "b");
  await a.t.publish("orders.created", order());
  await waitFor("the original", () => got.length === 1, 5000);
  const sealed: Envelope = JSON.parse(r.stored[0]);
  await r.raw.publish("orders.created", {
    ...sealed,
    id: "tampered-ct",
    payload: flipCiphertext(sealed.payload),
  });
  await r.raw.publish("orders.created", {
    ...sealed,
    source: "someone-else",
  });
  const reasons = await deadReason(r.raw, "orders.created", 2);
  for (const reason of reasons) {
    assert.match(
      reason,
      /^sealed bad_signature: the signature of 'node:a' does not cover this envelope/,
    );
  }
  assert.equal(got.length, 1);
  assert.equal(refused(b.metrics, "bad_signature"), 2);
});

Deno.test("sealed transport: messages published together share one batch signature, each with its own Merkle path, and all open", async () => {
  await using r = await rig();
  // Its lookups cached, so the warm publishes below read no KV.
  const a = await r.node("a", { cacheMs: 60_000 });
  const b = await r.node("b");
  await r.node("c");
  const got = await collect(b.t, "orders.created", "b");
  // Cold: the three find no session and share the one made for them. (Each
  // looks the recipients' keys up in KV first; those reads may finish on
  // different turns of the event loop, so they need not share a batch.)
  await Promise.all(
    [0, 1, 2].map(() => a.t.publish("orders.created", order())),
  );
  await waitFor("all three", () => got.length === 3, 5000);
  assert.equal(
    new Set(r.stored.map((e) => inspectSealed(JSON.parse(e).payload).session))
      .size,
    1,
  );
  // Warm (keys cached, session open): three published in one turn are
  // sealed before the next timer tick, so they are one batch.
  r.stored.length = 0;
  await Promise.all(
    [0, 1, 2].map(() => a.t.publish("orders.created", order())),
  );
  await waitFor("three more", () => got.length === 6, 5000);
  const proofs = r.stored.map((e) => sealedFields(JSON.parse(e).payload));
  const b64 = (b: Uint8Array) => b.toBase64();
  assert.equal(new Set(proofs.map((p) => b64(p.sig))).size, 1);
  assert.equal(new Set(proofs.map((p) => b64(p.root))).size, 1);
  assert.deepEqual(proofs.map((p) => [p.i, p.m]), [[0, 3], [1, 3], [2, 3]]);
  // Leaves 0 and 1 pair up under the root with 2; 2 is carried up alone.
  assert.deepEqual(proofs.map((p) => p.pathLength), [2, 2, 1]);
  assert.deepEqual(
    got.map((d) => d.envelope.payload),
    [0, 1, 2, 3, 4, 5].map(() => ({ item: SECRET, qty: 2 })),
  );
});

Deno.test("sealed transport: a batch signature is plain Ed25519 that WebCrypto verifies, and a signing key of another algorithm is refused", async () => {
  await using r = await rig();
  const a = await r.node("a");
  const b = await r.node("b");
  await r.node("c");
  const got = await collect(b.t, "orders.created", "b");
  // One first, so the session and the recipient's key are there and the
  // next two usually share a batch (the check below holds either way).
  await a.t.publish("orders.created", order());
  await waitFor("the first", () => got.length === 1, 5000);
  await Promise.all(
    [0, 1].map(() => a.t.publish("orders.created", order())),
  );
  await waitFor("all three", () => got.length === 3, 5000);
  // What docs/security.md says is signed: the context, 0x00, the JSON of
  // [sender, m], the root.
  const p = sealedFields(JSON.parse(r.stored[2]).payload);
  const head = new TextEncoder().encode(
    "plexus-sealed/v3 batch\0" + JSON.stringify(["node:a", p.m]),
  );
  const signed = new Uint8Array(head.length + 32);
  signed.set(head);
  signed.set(p.root, head.length);
  assert.equal(
    await crypto.subtle.verify(
      "Ed25519",
      a.ed.publicKey,
      new Uint8Array(p.sig),
      signed,
    ),
    true,
  );
  // The root is over the digests it says: SHA-256 of 0x00, the context,
  // 0x00, the routing fields' JSON and the payload up to the ciphertext's
  // end; an inner node SHA-256 of 0x01, left, right.
  const leafOf = (e: Envelope) => {
    const f = sealedFields(e.payload);
    return createHash("sha256").update(
      "\0plexus-sealed/v3 message\0" + JSON.stringify([
        e.id,
        e.type,
        e.topic,
        e.source,
        e.timestamp,
        e.correlationId ?? null,
        e.replyTo ?? null,
        e.destination ?? null,
      ]),
    ).update(f.bytes.subarray(0, f.ctEnd)).digest();
  };
  // The messages of p's batch (same root), in their places in it.
  const batch = r.stored.map((s) => JSON.parse(s) as Envelope)
    .filter((e) => sealedFields(e.payload).root.toHex() === p.root.toHex())
    .sort((x, y) => sealedFields(x.payload).i - sealedFields(y.payload).i);
  assert.equal(batch.length, p.m, "every message of the batch stored");
  const leaves = batch.map(leafOf);
  assert.equal(
    (leaves.length === 1 ? leaves[0] : createHash("sha256")
      .update(new Uint8Array([1])).update(leaves[0]).update(leaves[1])
      .digest()).toString("hex"),
    p.root.toHex(),
  );
  // A key of another algorithm is refused, as WebCrypto refuses it
  // (node:crypto, which signs the batches, would take it).
  const ecdsa = await crypto.subtle.generateKey(
    { name: "ECDSA", namedCurve: "P-256" },
    false,
    ["sign", "verify"],
  ) as CryptoKeyPair;
  const t = sealedTransport(r.raw, policy, {
    id: "node:a",
    signingKey: ecdsa.privateKey,
    x25519: a.x25519,
    directory: r.directory,
  });
  await assert.rejects(
    t.publish("orders.created", order()),
    /its signing key is ECDSA, not Ed25519/,
  );
  await t.close();
});

Deno.test("sealed transport: a message whose digest is not in its batch's signed tree is refused, even with a genuine signature and path", async () => {
  await using r = await rig();
  const a = await r.node("a");
  const b = await r.node("b");
  await r.node("c");
  const got = await collect(b.t, "orders.created", "b");
  await Promise.all([0, 1].map(() => a.t.publish("orders.created", order())));
  await waitFor("the originals", () => got.length === 2, 5000);
  const [first, second] = r.stored.map((e) => JSON.parse(e) as Envelope);
  // Message 1's body with message 2's place in the batch (a copy of a member
  // moved to another index), and message 1 with a field altered.
  await r.raw.publish("orders.created", {
    ...first,
    id: "swapped",
    payload: withProofOf(first.payload, second.payload),
  });
  await r.raw.publish("orders.created", {
    ...first,
    type: "command",
  });
  const reasons = await deadReason(r.raw, "orders.created", 2);
  for (const reason of reasons) {
    assert.match(
      reason,
      /^sealed bad_signature: the signature of 'node:a' does not cover this envelope: its digest is not in the batch it claims/,
    );
  }
  assert.equal(got.length, 2);
  assert.equal(refused(b.metrics, "bad_signature"), 2);
});

Deno.test("sealed transport: a recipient cannot forge another sender's message: a batch it signs as that sender is refused", async () => {
  await using r = await rig();
  await r.node("a");
  const b = await r.node("b");
  const c = await r.node("c");
  const got = await collect(b.t, "orders.created", "b");
  // c holds every session key it is sent, but only its own signing key.
  const forger = sealedTransport(
    {
      name: r.raw.name,
      caps: r.raw.caps,
      publish: r.raw.publish.bind(r.raw),
      subscribe: r.raw.subscribe.bind(r.raw),
      close: () => Promise.resolve(),
    },
    policy,
    {
      id: "node:a",
      signingKey: c.ed.privateKey,
      x25519: c.x25519,
      directory: r.directory,
    },
  );
  await forger.publish("orders.created", order());
  const [reason] = await deadReason(r.raw, "orders.created");
  assert.match(
    reason,
    /^sealed bad_signature: the signature of 'node:a' does not cover this envelope: the batch signature does not verify over its root/,
  );
  assert.equal(got.length, 0);
  assert.equal(refused(b.metrics, "bad_signature"), 1);
});

Deno.test("sealed transport: a copy with a forged batch signature is refused and does not spoil the genuine message's", async () => {
  await using r = await rig();
  const a = await r.node("a");
  const b = await r.node("b");
  await r.node("c");
  // Sealed while nobody listens (the memory broker keeps nothing), replayed below.
  await a.t.publish("orders.created", order());
  const genuine: Envelope = JSON.parse(r.stored[0]);
  const got = await collect(b.t, "orders.created", "b");
  await r.raw.publish("orders.created", {
    ...genuine,
    payload: flipSignature(genuine.payload),
  });
  await r.raw.publish("orders.created", genuine);
  const [reason] = await deadReason(r.raw, "orders.created");
  assert.match(
    reason,
    /^sealed bad_signature: .*the batch signature does not verify over its root/,
  );
  await waitFor("the genuine one", () => got.length === 1, 5000);
  assert.equal(got[0].envelope.id, genuine.id);
  assert.equal(refused(b.metrics, "bad_signature"), 1);
});

Deno.test("sealed transport: a message re-addressed to another topic is refused", async () => {
  await using r = await rig();
  const a = await r.node("a");
  const b = await r.node("b");
  await r.node("c");
  const got = await collect(b.t, "orders.cancelled", "b");
  await a.t.publish("orders.created", order());
  const sealed: Envelope = JSON.parse(r.stored[0]);
  // Moved as it is, and moved with its envelope topic rewritten.
  await r.raw.publish("orders.cancelled", sealed);
  await r.raw.publish("orders.cancelled", {
    ...sealed,
    topic: "orders.cancelled",
  });
  const reasons = await deadReason(r.raw, "orders.cancelled", 2);
  for (const reason of reasons) {
    assert.match(
      reason,
      /^sealed readdressed: sealed for topic 'orders.created', found on 'orders.cancelled'/,
    );
  }
  assert.equal(got.length, 0);
});

Deno.test("sealed transport: a replay outside the window, a copy inside it, and a plain payload are refused", async () => {
  await using r = await rig();
  let skew = 0;
  const clock: Clock = { ...systemClock, now: () => Date.now() + skew };
  const a = await r.node("a");
  const b = await r.node("b", { clock });
  await r.node("c");
  const got = await collect(b.t, "orders.created", "b");
  await a.t.publish("orders.created", order());
  await waitFor("the original", () => got.length === 1, 5000);
  const sealed: Envelope = JSON.parse(r.stored[0]);
  // The same bytes again, at once: a replay within the window.
  await r.raw.publish("orders.created", sealed);
  let reasons = await deadReason(r.raw, "orders.created", 1);
  assert.match(
    reasons[0],
    /^sealed replay: message '.+' from 'node:a' was already handled here/,
  );
  // Six minutes later (window 5 min): outside the window.
  skew = 6 * 60_000;
  await r.raw.publish("orders.created", sealed);
  reasons = await deadReason(r.raw, "orders.created", 2);
  assert.match(reasons[1], /^sealed replay_window: timestamp \d+ is outside/);
  // A plain payload on a sealed topic.
  skew = 0;
  await r.raw.publish("orders.created", order());
  reasons = await deadReason(r.raw, "orders.created", 3);
  assert.match(reasons[2], /^sealed not_sealed: /);
  assert.equal(got.length, 1);
  for (const reason of ["replay", "replay_window", "not_sealed"]) {
    assert.equal(refused(b.metrics, reason), 1, reason);
  }
});

Deno.test("sealed transport: a redelivery after the handler failed is not taken for a replay", async () => {
  await using r = await rig();
  const a = await r.node("a");
  const b = await r.node("b");
  await r.node("c");
  const attempts: number[] = [];
  await b.t.subscribe("orders.created", async (d) => {
    attempts.push(d.attempts);
    if (d.attempts === 1) throw new Error("database busy");
    await d.ack();
  }, { group: "b" });
  await a.t.publish(
    "orders.created",
    order("orders.created", { delivery: { backoff: "none" } as never }),
  );
  await waitFor("the second attempt", () => attempts.length === 2, 5000);
  assert.deepEqual(attempts, [1, 2]);
  assert.deepEqual(await r.raw.deadLetters!("orders.created"), []);
});

Deno.test("sealed transport: a delivery the handler naks is redelivered and handled, not taken for a replay", async () => {
  await using r = await rig();
  const a = await r.node("a");
  const b = await r.node("b");
  await r.node("c");
  const attempts: number[] = [];
  await b.t.subscribe("orders.created", async (d) => {
    attempts.push(d.attempts);
    if (d.attempts === 1) return await d.nak(0, "not yet");
    await d.ack();
  }, { group: "b" });
  await a.t.publish("orders.created", order());
  await waitFor("the second attempt", () => attempts.length === 2, 5000);
  assert.deepEqual(attempts, [1, 2]);
  assert.equal(refused(b.metrics, "replay"), 0);
  assert.deepEqual(await r.raw.deadLetters!("orders.created"), []);
});

Deno.test("sealed transport: a sealed payload with a missing, mistyped or oversized field is refused as malformed", async () => {
  await using r = await rig();
  const a = await r.node("a");
  const b = await r.node("b");
  await r.node("c");
  const got = await collect(b.t, "orders.created", "b");
  await a.t.publish("orders.created", order());
  await waitFor("the original", () => got.length === 1, 5000);
  const sealed: Envelope = JSON.parse(r.stored[0]);
  const edit = (f: Parameters<typeof editSealed>[1]) =>
    editSealed(sealed.payload, f);
  const bad = [
    edit((b) => b.subarray(0, b.length - 1)), // truncated
    edit((b) => {
      const out = new Uint8Array(b.length + 1);
      out.set(b);
      return out;
    }), // a byte after the proof
    edit((b) => {
      b[1] = 255;
    }), // a sender id longer than the payload holds
    edit((b, f) => {
      b[f.sessionAt + 16] = 0;
      b[f.sessionAt + 17] = 0;
    }), // no recipient
    edit((b, f) => {
      b[f.ctEnd + PROOF_PLACE + 3] = 1;
    }), // message 1 of a batch of one
    edit((b, f) => {
      const out = new Uint8Array(b.length + 32);
      out.set(b);
      out[f.ctEnd + PROOF_PLACE + 4] = 1;
      return out;
    }), // a path one digest too long
    { v: "2", from: "node:a", ct: "AAAA", sig: "AAAA" }, // the old JSON format
    { v: "9", ct: "AAAA" },
  ];
  for (const payload of bad) {
    await r.raw.publish("orders.created", { ...sealed, payload });
  }
  const reasons = await deadReason(r.raw, "orders.created", bad.length);
  for (const reason of reasons) assert.match(reason, /^sealed malformed: /);
  assert.equal(refused(b.metrics, "malformed"), bad.length);
  assert.equal(got.length, 1);
});

Deno.test("sealed transport: a sender with no published key is refused", async () => {
  await using r = await rig();
  const stranger = await r.node("x", { publish: false });
  const b = await r.node("b");
  await r.node("c");
  const got = await collect(b.t, "orders.created", "b");
  await stranger.t.publish("orders.created", order());
  const [reason] = await deadReason(r.raw, "orders.created");
  assert.match(reason, /^sealed unknown_sender: sender 'node:x'/);
  assert.equal(got.length, 0);
});

Deno.test("sealed transport: a transport plugin on a node whose config names sealed topics seals them, and publishes the node's keys", async () => {
  const dataDir = await Deno.makeTempDir();
  const kv = await Deno.openKv(":memory:");
  const broker = new MemoryBroker();
  const stored: string[] = [];
  const plugin = transportPlugin({
    name: "memory",
    config: z.strictObject({}),
    connect: () => {
      const inner = memoryTransport({ broker, maxMessageBytes: 1 << 20 });
      return Promise.resolve({
        ...inner,
        name: inner.name,
        caps: inner.caps,
        publish(topic: string, envelope: Envelope) {
          stored.push(JSON.stringify(envelope));
          return inner.publish(topic, envelope);
        },
        subscribe: inner.subscribe.bind(inner),
        close: inner.close.bind(inner),
      });
    },
  });
  const kernel = createKernel({
    log: createLogger({ level: "error", sinks: [] }),
    metrics: createMetrics("plexus_"),
    kv,
    router: createRouter(),
    node: { id: "n1", version: "0", address: "http://127.0.0.1:0", dataDir },
    core: {
      "node:key": await generateNodeKey(),
      [SEALING_POLICY]: {
        topics: [{ pattern: "orders.>", recipients: ["node:n1"] }],
      },
    },
  });
  try {
    kernel.register(plugin);
    await kernel.start();
    const t = kernel.get<Transport>("transport:memory");
    const got = await collect(t, "orders.created", "g");
    await t.publish("orders.created", order());
    await waitFor("delivered", () => got.length === 1, 5000);
    assert.deepEqual(got[0].envelope.payload, { item: SECRET, qty: 2 });
    assert.ok(!stored[0].includes(SECRET), stored[0]);
    assert.equal(inspectSealed(JSON.parse(stored[0]).payload).from, "node:n1");
    const entry = await kvSealingDirectory(kv).lookup("node:n1");
    assert.equal(entry?.x25519.length, 32);
    const info = await Deno.stat(`${dataDir}/node-x25519.jwk`);
    assert.equal(info.mode! & 0o777, 0o600);
  } finally {
    await kernel.stop();
    stopBroker(broker);
    kv.close();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("sealed transport: the replay memory keeps the newest ids up to its size and drops expired ones from the oldest on", () => {
  const seen = new ReplayMemory(3);
  const has = (id: string) => seen.has("node:a", id);
  for (const id of ["a", "b", "c", "d", "e"]) seen.add("node:a", id, 1000, 0);
  assert.deepEqual(
    ["a", "b", "c", "d", "e"].map(has),
    [false, false, true, true, true],
  );
  // Added again: kept once, with the later expiry.
  seen.add("node:a", "e", 5000, 0);
  assert.equal(seen.size, 3);
  // At 2000, c and d (1000) have expired; e (5000) stays.
  seen.add("node:a", "f", 3000, 2000);
  assert.deepEqual(["c", "d", "e", "f"].map(has), [false, false, true, true]);
  // The sweep stops at the oldest id not expired (e): f, expired behind
  // it, stays until e goes (a copy of f is outside its window anyway).
  seen.add("node:a", "g", 9000, 4000);
  assert.deepEqual(["e", "f", "g"].map(has), [true, true, true]);
  seen.add("node:a", "h", 9000, 6000);
  assert.deepEqual(["e", "f", "g", "h"].map(has), [false, false, true, true]);
});

Deno.test("sealed transport: the replay memory keeps ids per sender: one sender's id is not another's, and all share the size", () => {
  const seen = new ReplayMemory(3);
  seen.add("node:a", "m1", 1000, 0);
  assert.ok(seen.has("node:a", "m1"));
  assert.ok(!seen.has("node:b", "m1"));
  // Not a concatenation: "node:a|x" + "y" is not "node:a" + "x|y".
  seen.add("node:a|x", "y", 1000, 0);
  assert.ok(!seen.has("node:a", "x|y"));
  seen.add("node:b", "m1", 1000, 0);
  assert.ok(seen.has("node:b", "m1") && seen.has("node:a", "m1"));
  // Full: the oldest of any sender goes.
  seen.add("node:c", "m9", 1000, 0);
  assert.equal(seen.size, 3);
  assert.ok(!seen.has("node:a", "m1"));
  assert.ok(seen.has("node:b", "m1") && seen.has("node:c", "m9"));
  // Expired at 2000: all three go for the new one.
  seen.add("node:a", "m1", 3000, 2000);
  assert.equal(seen.size, 1);
  assert.ok(seen.has("node:a", "m1") && !seen.has("node:b", "m1"));
});

Deno.test("sealed transport: a full replay memory drops its oldest id in constant time", () => {
  // Dropping a Map's oldest entries one at a time (the earlier version) made
  // each add walk the deleted slots: ~80 µs an add once full, ~23 s here.
  const max = 100_000;
  const seen = new ReplayMemory(max);
  const t0 = performance.now();
  for (let i = 0; i < 3 * max; i++) seen.add("node:a", `${i}`, Infinity, i);
  const ms = performance.now() - t0;
  assert.equal(seen.size, max);
  assert.ok(
    seen.has("node:a", `${2 * max}`) && !seen.has("node:a", `${2 * max - 1}`),
  );
  assert.ok(ms < 8000, `300,000 adds took ${Math.round(ms)} ms`);
});

Deno.test("sealed transport: a batch's members of different sizes share one key stream, each from its own block, and open in any order", async () => {
  await using r = await rig();
  const a = await r.node("a", { cacheMs: 60_000 });
  const b = await r.node("b");
  const c = await r.node("c");
  // Warm the session, then seal five in one turn while nobody listens.
  await a.t.publish("orders.created", order());
  r.stored.length = 0;
  const sizes = [10, 3000, 50, 700, 1];
  await Promise.all(sizes.map((n) =>
    a.t.publish(
      "orders.created",
      order("orders.created", {
        payload: { item: SECRET, pad: "x".repeat(n) },
      }),
    )
  ));
  const sealed = r.stored.map((e) => JSON.parse(e) as Envelope);
  const fields = sealed.map((e) => inspectSealed(e.payload));
  assert.equal(new Set(fields.map((f) => f.n)).size, 1);
  // Each starts on the block after the one before it ends.
  let next = 0;
  for (const f of fields) {
    assert.equal(f.block, next);
    next += Math.ceil(f.ciphertext.length / 64);
  }
  const got = await collect(b.t, "orders.created", "b");
  for (const e of sealed.toReversed()) await r.raw.publish("orders.created", e);
  await waitFor("all five", () => got.length === 5, 5000);
  assert.deepEqual(
    got.map((d) => (d.envelope.payload as { pad: string }).pad.length),
    sizes.toReversed(),
  );
  // In order, from the middle, then the first: key streams sized from the
  // members seen (a small first member's stream ends before a large second).
  const gotC = await collect(c.t, "orders.created", "c");
  for (const j of [1, 2, 0, 3, 4]) {
    await r.raw.publish("orders.created", sealed[j]);
  }
  await waitFor("all five at c", () => gotC.length === 5, 5000);
  assert.deepEqual(
    gotC.map((d) => (d.envelope.payload as { pad: string }).pad.length),
    [1, 2, 0, 3, 4].map((j) => sizes[j]),
  );
});

Deno.test("sealed transport: a batch of two sessions that outgrows its buffer, with multi-byte and odd-length payloads, opens to the payloads sealed", async () => {
  await using r = await rig();
  const twoRules: SealingPolicy = {
    topics: [
      { pattern: "orders.*", recipients: ["node:b"] },
      { pattern: "audit.>", recipients: ["node:b"] },
    ],
  };
  const a = await r.node("a", { cacheMs: 60_000, policy: twoRules });
  const b = await r.node("b", { policy: twoRules });
  // Warm both sessions, then seal 60 in one turn: ~6 KB of UTF-8 each
  // (room for 3 bytes a character is reserved), 30 on each rule's session.
  await a.t.publish("orders.created", order());
  await a.t.publish("audit.log", order("audit.log"));
  r.stored.length = 0;
  const pad = (j: number) => "é€x".repeat(700 + j) + "y".repeat(j % 5);
  const topics = Array.from(
    { length: 60 },
    (_, j) => j % 2 ? "audit.log" : "orders.created",
  );
  await Promise.all(
    topics.map((topic, j) =>
      a.t.publish(topic, order(topic, { payload: { j, pad: pad(j) } }))
    ),
  );
  const sealed = r.stored.map((e) => JSON.parse(e) as Envelope);
  assert.equal(sealed.length, 60);
  const roots = sealed.map((e) => sealedFields(e.payload).root.toHex());
  assert.equal(new Set(roots).size, 1, "one batch signature");
  assert.equal(
    new Set(sealed.map((e) => sealedFields(e.payload).session.toHex())).size,
    2,
  );
  const got = await collect(b.t, "orders.created", "b");
  const gotAudit = await collect(b.t, "audit.log", "b");
  for (const e of sealed) await r.raw.publish(e.topic, e);
  await waitFor("all 60", () => got.length + gotAudit.length === 60, 5000);
  for (const d of [...got, ...gotAudit]) {
    const { j, pad: text } = d.envelope.payload as { j: number; pad: string };
    assert.equal(text, pad(j));
    assert.equal(d.envelope.topic, topics[j]);
  }
});

Deno.test("sealed transport: members of a batch opened together, waiting on the sender's key or the session key, open to their own payloads", async () => {
  await using r = await rig();
  const twoRules: SealingPolicy = {
    topics: [
      { pattern: "orders.*", recipients: ["node:b"] },
      { pattern: "audit.>", recipients: ["node:b"] },
    ],
  };
  const a = await r.node("a", { cacheMs: 60_000, policy: twoRules });
  const b = await r.node("b", { policy: twoRules });
  // Payloads are decoded into one reused buffer: a member that waits must
  // have kept its own bytes. One opener waits on each sender-key lookup
  // (the uncached directory); the other knows the sender from another
  // session's message and waits on this session's key.
  const cold = sealedOpener({
    id: "node:b",
    x25519: b.x25519,
    directory: r.directory,
  });
  const cache = new Map<string, ReturnType<typeof r.directory.lookup>>();
  const warm = sealedOpener({
    id: "node:b",
    x25519: b.x25519,
    directory: {
      lookup(id) {
        if (!cache.has(id)) cache.set(id, r.directory.lookup(id));
        return cache.get(id)!;
      },
    },
  });
  await a.t.publish("audit.log", order("audit.log"));
  const other = JSON.parse(r.stored[0]) as Envelope;
  await warm.open(other, other.topic);
  r.stored.length = 0;
  const payload = (j: number) => ({ j, pad: "z".repeat(j * 7) });
  await Promise.all(Array.from({ length: 20 }, (_, j) =>
    a.t.publish(
      "orders.created",
      order("orders.created", { payload: payload(j) }),
    )));
  const sealed = r.stored.map((e) => JSON.parse(e) as Envelope);
  const want = sealed.map((_, j) => payload(j));
  for (const opener of [cold, warm]) {
    const opened = await Promise.all(
      sealed.map((e) => opener.open(e, e.topic)),
    );
    assert.deepEqual(opened.map((e) => e.payload), want);
  }
});

Deno.test("sealed transport: an envelope is refused as too large by its exact size, escapes in headers counted, and one that fits is sealed", async () => {
  const broker = new MemoryBroker();
  const kv = await Deno.openKv(":memory:");
  const directory = kvSealingDirectory(kv);
  const one: SealingPolicy = {
    topics: [{ pattern: "orders.*", recipients: ["node:b"] }],
  };
  const inner = memoryTransport({ broker, maxMessageBytes: 8192 });
  const t = sealedTransport(
    inner,
    one,
    await freshSealingKeys("node:a", directory),
  );
  await freshSealingKeys("node:b", directory);
  try {
    const limit = t.caps.maxMessageBytes; // (8192 - 1536 - 256) * 3/4
    assert.equal(limit, 4800);
    // 1,000 control characters: 1,000 bytes raw, 6,000 in JSON.
    const escaped = order("orders.created", {
      payload: 1,
      headers: { x: "\u0001".repeat(1000) },
    });
    await assert.rejects(
      () => t.publish("orders.created", escaped),
      (err: Error & { code?: string }) => err.code === "too_large",
    );
    // 1,000 two-byte characters: 2,000 bytes of JSON, within the limit.
    const wide = order("orders.created", {
      payload: 1,
      headers: { x: "é".repeat(1000) },
    });
    await t.publish("orders.created", wide);
    const big = order("orders.created", { payload: "y".repeat(limit) });
    await assert.rejects(
      () => t.publish("orders.created", big),
      (err: Error & { code?: string }) => err.code === "too_large",
    );
  } finally {
    await t.close();
    stopBroker(broker);
    kv.close();
  }
});

Deno.test("sealed transport: a burst of 16 or more sealed in one turn is signed and handed on before the timer tick; fewer wait for it", async () => {
  await using r = await rig();
  // In this thread (the default): a worker's round trip is a task of its own.
  const a = await r.node("a", { cacheMs: 60_000 });
  await r.node("b");
  await r.node("c");
  await a.t.publish("orders.created", order()); // warm: session open
  r.stored.length = 0;
  const burst = Promise.all(
    Array.from({ length: 20 }, () => a.t.publish("orders.created", order())),
  );
  await Promise.resolve(); // the microtasks of this turn, no timer
  assert.equal(r.stored.length, 20);
  await burst;
  r.stored.length = 0;
  const few = Promise.all(
    Array.from({ length: 3 }, () => a.t.publish("orders.created", order())),
  );
  await Promise.resolve();
  assert.equal(r.stored.length, 0);
  await few;
  assert.equal(r.stored.length, 3);
  const roots = r.stored.map((e) =>
    sealedFields(JSON.parse(e).payload).root.toHex()
  );
  assert.equal(new Set(roots).size, 1);
});

Deno.test("sealed transport: the worker and the node's thread seal alike: each opens what the other sealed, a batch's members opened together in any order, a tampered one among them refused alone", async () => {
  await using r = await rig();
  const here = await r.node("a", { cacheMs: 60_000, worker: false });
  const there = await r.node("d", { cacheMs: 60_000, worker: true });
  const b = await r.node("b", { cacheMs: 60_000, worker: true });
  const c = await r.node("c", { cacheMs: 60_000, worker: false });
  const warmB = await collect(b.t, "orders.created", "b");
  const warmC = await collect(c.t, "orders.created", "c");
  // Keys known at b and c first (one rule, one session for both topics):
  // later messages take b's worker.
  await here.t.publish("orders.created", order());
  await there.t.publish("orders.created", order());
  await waitFor(
    "the first two",
    () => warmB.length === 2 && warmC.length === 2,
    5000,
  );
  r.stored.length = 0;
  const sizes = [10, 3000, 50, 700, 1];
  const burst = (t: Transport) =>
    Promise.all(sizes.map((n) =>
      t.publish(
        "orders.burst",
        order("orders.burst", {
          payload: { item: SECRET, pad: "x".repeat(n) },
        }),
      )
    ));
  await burst(here.t);
  await burst(there.t);
  const sealed = r.stored.map((e) => JSON.parse(e) as Envelope);
  assert.equal(sealed.length, 10);
  assert.equal(
    new Set(sealed.map((e) => sealedFields(e.payload).root.toHex())).size,
    2,
  );
  const tampered = {
    ...sealed[3],
    id: "tampered",
    payload: flipCiphertext(sealed[3].payload),
  };
  // Sealed while nobody listened; now in one turn: handed over together.
  const atB = await collect(b.t, "orders.burst", "b");
  const atC = await collect(c.t, "orders.burst", "c");
  await Promise.all(
    [...sealed.toReversed(), tampered].map((e) =>
      r.raw.publish("orders.burst", e)
    ),
  );
  await waitFor(
    "ten at b and c",
    () => atB.length === 10 && atC.length === 10,
    5000,
  );
  const pads = (got: Delivery[]) =>
    got.map((d) => (d.envelope.payload as { pad: string }).pad.length)
      .toSorted((x, y) => x - y);
  const want = [...sizes, ...sizes].toSorted((x, y) => x - y);
  assert.deepEqual(pads(atB), want);
  assert.deepEqual(pads(atC), want);
  for (const d of atB) {
    assert.ok(
      ["node:a", "node:d"].includes(d.envelope.headers[SEALED_FROM_HEADER]),
    );
  }
  const reasons = await deadReason(r.raw, "orders.burst", 2);
  for (const reason of reasons) {
    assert.match(
      reason,
      /^sealed bad_signature: the signature of 'node:a' does not cover/,
    );
  }
  assert.equal(refused(b.metrics, "bad_signature"), 1);
  assert.equal(refused(c.metrics, "bad_signature"), 1);
});
