/**
 * The sealed-payload cases every durable transport runs
 * (sealed_redis_test.ts, sealed_kafka_test.ts): three nodes on one broker
 * with one sealing directory, and the broker's stored bytes read with the
 * broker's own CLI.
 */
import { flipCiphertext } from "../../core/security/_sealed_testing.ts";
import assert from "node:assert/strict";
import { createEnvelope, type Envelope } from "../../core/envelope.ts";
import { type Clock, systemClock } from "../../core/clock.ts";
import { createMetrics } from "../../core/observe/metrics.ts";
import type { DeadLetter, Delivery, Transport } from "../../core/transport.ts";
import {
  sealedTransport,
  type SealingPolicy,
} from "../../core/security/sealed_transport.ts";
import {
  freshSealingKeys,
  kvSealingDirectory,
} from "../../core/security/sealing_keys.ts";
import { waitFor } from "../../testing/conformance.ts";

/** The plaintext marker that must never reach the broker. */
export const MARKER = "plaintext-marker-3f9c1e";

/** What a durable transport's sealed test supplies. */
export interface SealedBroker {
  /** A fresh connection to the broker (one per node). */
  connect(): Promise<Transport>;
  /**
   * What the broker stores for `topic` (`messages` records) and its DLQ (at
   * least `dead` records), read with the broker's own CLI.
   */
  stored(topic: string, messages: number, dead: number): Promise<string>;
  /**
   * Publishes a message already stored once again, as someone with access
   * to the broker would. @default {a plain publish on a raw connection}
   */
  replay?(topic: string, envelope: Envelope): Promise<void>;
  /** How long a delivery may take. */
  timeoutMs: number;
}

export async function sealedRig(broker: SealedBroker, topicPrefix: string) {
  const kv = await Deno.openKv(":memory:");
  const directory = kvSealingDirectory(kv, { cacheMs: 0 });
  const run = crypto.randomUUID().slice(0, 8);
  const policy: SealingPolicy = {
    topics: [{
      pattern: `${topicPrefix}.${run}.*`,
      recipients: ["node:a", "node:b"],
    }],
  };
  const open: Transport[] = [];
  let skew = 0;
  const skewed: Clock = { ...systemClock, now: () => Date.now() + skew };
  async function node(id: string, clock: Clock = systemClock) {
    const keys = await freshSealingKeys(`node:${id}`, directory);
    const raw = await broker.connect();
    open.push(raw);
    const metrics = createMetrics("plexus_");
    const sent: Envelope[] = [];
    const spy: Transport = {
      name: raw.name,
      caps: raw.caps,
      publish(topic, envelope, opts) {
        sent.push(envelope);
        return raw.publish(topic, envelope, opts);
      },
      subscribe: raw.subscribe.bind(raw),
      deadLetters: raw.deadLetters!.bind(raw),
      close: () => Promise.resolve(),
    };
    const t = sealedTransport(spy, policy, keys, { metrics, clock });
    return { t, raw, metrics, sent };
  }
  const a = await node("a");
  const b = await node("b", skewed);
  const d = await node("d");
  return {
    a,
    b,
    d,
    topic: (name: string) => `${topicPrefix}.${run}.${name}`,
    setSkew(ms: number) {
      skew = ms;
    },
    async [Symbol.asyncDispose]() {
      for (const t of open) await t.close();
      kv.close();
    },
  };
}

export function order(topic: string, n: number): Envelope {
  return createEnvelope({
    type: "event",
    topic,
    source: "shop",
    correlationId: `c-${n}`,
    payload: { note: MARKER, n },
  });
}

export async function collect(t: Transport, topic: string, group: string) {
  const got: Delivery[] = [];
  await t.subscribe(topic, async (d) => {
    got.push(d);
    await d.ack();
  }, { group, maxInFlight: 8 });
  return got;
}

/** The recipient gets the plaintext; the broker's bytes hold none of it. */
export async function storesNoPlaintext(broker: SealedBroker, prefix: string) {
  await using r = await sealedRig(broker, prefix);
  const topic = r.topic("created");
  const got = await collect(r.b.t, topic, "b");
  for (let n = 0; n < 3; n++) await r.a.t.publish(topic, order(topic, n));
  await waitFor("3 opened at b", () => got.length >= 3, broker.timeoutMs);
  assert.deepEqual(
    got.map((d) => d.envelope.payload).sort((x, y) =>
      (x as { n: number }).n - (y as { n: number }).n
    ),
    [0, 1, 2].map((n) => ({ note: MARKER, n })),
  );
  const bytes = await broker.stored(topic, 3, 0);
  assert.equal(r.a.sent.length, 3);
  for (const sealed of r.a.sent) {
    assert.ok(
      bytes.includes(sealed.payload as string),
      `the CLI shows the sealed payloads:\n${bytes}`,
    );
  }
  assert.ok(!bytes.includes(MARKER), `plaintext on the broker:\n${bytes}`);
  assert.ok(!bytes.includes('"note"'), `plaintext on the broker:\n${bytes}`);
}

/** Every refusal case dead-letters with its reason; the DLQ holds no plaintext either. */
export async function refusesAndDeadLetters(
  broker: SealedBroker,
  prefix: string,
) {
  await using r = await sealedRig(broker, prefix);
  const topic = r.topic("refusals");
  const other = r.topic("other");
  const atB = await collect(r.b.t, topic, "b");
  const atBOther = await collect(r.b.t, other, "b");
  const atD = await collect(r.d.t, topic, "d");
  await r.a.t.publish(topic, order(topic, 0));
  await waitFor("the original at b", () => atB.length === 1, broker.timeoutMs);
  // What a published to the broker: replayed and altered below.
  const first = r.a.sent[0];
  const replay = (t: string, e: Envelope) =>
    broker.replay ? broker.replay(t, e) : r.a.raw.publish(t, e);
  await replay(topic, first); // a copy inside the window
  await r.a.raw.publish(topic, {
    ...first,
    id: "tampered",
    payload: flipCiphertext(first.payload, 3),
  });
  await replay(other, { ...first, topic: other }); // re-addressed
  await r.a.raw.publish(
    topic,
    createEnvelope({
      type: "event",
      topic,
      source: "x",
      payload: { plain: 1 },
    }),
  ); // plain on a sealed topic
  const wantAtB = ["replay", "bad_signature", "not_sealed"];
  const bLetters = await waitFor("b's dead letters", async () => {
    const l = (await r.b.raw.deadLetters!(topic)).filter((x) =>
      x.group === "b"
    );
    return l.length >= wantAtB.length && l;
  }, broker.timeoutMs);
  assert.deepEqual(
    reasons(bLetters).sort(),
    [...wantAtB].sort(),
    JSON.stringify(bLetters.map((l) => l.reason)),
  );
  const moved = await waitFor("the re-addressed one", async () => {
    const l = await r.b.raw.deadLetters!(other);
    return l.length >= 1 && l;
  }, broker.timeoutMs);
  assert.match(moved[0].reason, /^sealed readdressed: sealed for topic /);
  // d is no recipient: the original and the later sealed message are refused.
  const dLetters = await waitFor("d's refusal", async () => {
    const l = (await r.d.raw.deadLetters!(topic)).filter((x) =>
      x.group === "d"
    );
    return l.some((x) => x.reason.startsWith("sealed not_recipient")) && l;
  }, broker.timeoutMs);
  assert.ok(dLetters.length >= 1);
  // b's clock 6 minutes ahead: the stored message is outside its window.
  r.setSkew(6 * 60_000);
  await replay(topic, first);
  const late = await waitFor("the late one", async () => {
    const l = (await r.b.raw.deadLetters!(topic)).filter((x) =>
      x.group === "b" && x.reason.startsWith("sealed replay_window")
    );
    return l.length >= 1 && l;
  }, broker.timeoutMs);
  assert.equal(late.length, 1);
  r.setSkew(0);
  assert.equal(atB.length, 1);
  assert.equal(atBOther.length, 0);
  assert.equal(atD.length, 0);
  for (const reason of [...wantAtB, "replay_window"]) {
    assert.equal(
      r.b.metrics.counter("plexus_sealed_refused_total", "").get({ reason }),
      1,
      reason,
    );
  }
  // Still serving: a fresh sealed message reaches b.
  await r.a.t.publish(topic, order(topic, 2));
  await waitFor("b still serving", () => atB.length === 2, broker.timeoutMs);
  const bytes = await broker.stored(topic, 6, 4);
  assert.ok(bytes.includes('"plain":1'), `the CLI shows the stream:\n${bytes}`);
  assert.ok(!bytes.includes(MARKER), `plaintext on the broker:\n${bytes}`);
}

function reasons(letters: DeadLetter[]): string[] {
  return letters.map((l) => /^sealed (\w+):/.exec(l.reason)?.[1] ?? l.reason);
}
