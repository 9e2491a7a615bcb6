import assert from "node:assert/strict";
import { createEnvelope } from "../../core/envelope.ts";
import type { Subscription } from "../../core/transport.ts";
import { waitFor } from "../../testing/conformance.ts";
import { connectKafka, type KafkaOptions } from "./transport.ts";

const brokers = Deno.env.get("KAFKA_BROKERS");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const skip = brokers
  ? undefined
  : 'KAFKA_BROKERS is not set (run: eval "$(deno task services)")';
if (skip && !required) console.log(`ignored: kafka rebalance: ${skip}`);

const opts = {
  ignore: skip !== undefined && !required,
  sanitizeOps: false,
  sanitizeResources: false,
};
const fast: KafkaOptions = {
  brokers,
  sessionTimeoutMs: 6000,
  heartbeatIntervalMs: 300,
  rebalanceTimeoutMs: 10_000,
  fetchMaxWaitMs: 200,
  closeTimeoutMs: 2000,
};
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test({
  ...opts,
  name:
    "kafka rebalance: a member joins and one leaves while messages flow, and every message is processed",
  async fn() {
    assert.ok(!skip, skip);
    const [pub, a, b] = await Promise.all(
      [0, 1, 2].map(() => connectKafka(fast)),
    );
    try {
      const topic = `rebalance.${crypto.randomUUID().slice(0, 8)}`;
      const seen = { a: new Set<string>(), b: new Set<string>() };
      let deliveries = 0;
      const member =
        (into: Set<string>) =>
        async (d: { envelope: { id: string }; ack(): Promise<void> }) => {
          deliveries++;
          into.add(d.envelope.id);
          await delay(2);
          await d.ack();
        };
      const subA: Subscription = await a.subscribe(topic, member(seen.a), {
        group: "flow",
        maxInFlight: 4,
      });
      const published: string[] = [];
      const total = 300;
      for (let i = 0; i < total; i++) {
        const e = createEnvelope({
          type: "event",
          topic,
          source: "test",
          payload: { i },
        });
        await pub.publish(topic, e, { key: `k${i % 12}` });
        published.push(e.id);
        if (i === 100) {
          await b.subscribe(topic, member(seen.b), {
            group: "flow",
            maxInFlight: 4,
          });
        }
        if (i === 200) await subA.close();
        await delay(3);
      }
      await waitFor(
        `all ${total} messages processed`,
        () => published.every((id) => seen.a.has(id) || seen.b.has(id)),
        30_000,
      );
      const afterLeave = published.slice(201);
      assert.ok(
        afterLeave.every((id) => seen.b.has(id)),
        "the remaining member did not take over the leaver's partitions",
      );
      assert.ok(seen.a.size > 0 && seen.b.size > 0, "work never moved");
      console.log(
        `  ${total} published, a: ${seen.a.size}, b: ${seen.b.size}, redelivered ${
          deliveries - new Set([...seen.a, ...seen.b]).size
        }`,
      );
    } finally {
      await Promise.allSettled([pub.close(), a.close(), b.close()]);
    }
  },
});

Deno.test({
  ...opts,
  name:
    "kafka commits: a finished later offset is not committed past an unfinished earlier one",
  async fn() {
    assert.ok(!skip, skip);
    const topic = `commit.${crypto.randomUUID().slice(0, 8)}`;
    const one = { ...fast, partitions: 1, closeTimeoutMs: 300 };
    const [pub, first, second] = await Promise.all(
      [0, 1, 2].map(() => connectKafka(one)),
    );
    try {
      const ids: string[] = [];
      const done: string[] = [];
      const sub = await first.subscribe(topic, async (d) => {
        const { i } = d.envelope.payload as { i: number };
        if (i === 0) return new Promise<void>(() => {}); // never finishes
        done.push(d.envelope.id);
        await d.ack();
      }, { group: "hold", maxInFlight: 4 });
      for (let i = 0; i < 4; i++) {
        const e = createEnvelope({
          type: "event",
          topic,
          source: "test",
          payload: { i },
        });
        ids.push(e.id);
        await pub.publish(topic, e, { key: `k${i}` });
      }
      await waitFor("offsets 1-3 finished", () => done.length === 3, 20_000);
      await delay(300); // let the commit of offset 0 (the unfinished one) go out
      await sub.close();
      const again: string[] = [];
      await second.subscribe(topic, async (d) => {
        again.push(d.envelope.id);
        await d.ack();
      }, { group: "hold" });
      await waitFor(
        "the unfinished message again",
        () => again.length > 0,
        20_000,
      );
      assert.equal(again[0], ids[0]);
    } finally {
      await Promise.allSettled([pub.close(), first.close(), second.close()]);
    }
  },
});
