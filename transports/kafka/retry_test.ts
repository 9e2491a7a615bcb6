import assert from "node:assert/strict";
import { createEnvelope } from "../../core/envelope.ts";
import { waitFor } from "../../testing/conformance.ts";
import { connectKafka, type KafkaOptions } from "./transport.ts";

const brokers = Deno.env.get("KAFKA_BROKERS");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const skip = brokers
  ? undefined
  : 'KAFKA_BROKERS is not set (run: eval "$(deno task services)")';
if (skip && !required) console.log(`ignored: kafka retry: ${skip}`);

const opts = {
  ignore: skip !== undefined && !required,
  sanitizeOps: false,
  sanitizeResources: false,
};
const fast: KafkaOptions = {
  brokers,
  sessionTimeoutMs: 6000,
  heartbeatIntervalMs: 300,
  fetchMaxWaitMs: 200,
  retryBaseMs: 20,
  closeTimeoutMs: 2000,
};
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test({
  ...opts,
  name:
    "kafka retry: a nak'ed message is retried only in the group that nak'ed it",
  async fn() {
    assert.ok(!skip, skip);
    const t = await connectKafka(fast);
    try {
      const topic = `retry.groups.${crypto.randomUUID().slice(0, 8)}`;
      const seen: Record<string, number[]> = { naks: [], acks: [] };
      await t.subscribe(topic, async (d) => {
        seen.naks.push(d.attempts);
        if (d.attempts === 1) await d.nak(50, "again");
        else await d.ack();
      }, { group: "naks" });
      await t.subscribe(topic, async (d) => {
        seen.acks.push(d.attempts);
        await d.ack();
      }, { group: "acks" });
      await t.publish(
        topic,
        createEnvelope({ type: "event", topic, source: "test", payload: 1 }),
      );
      await waitFor("the retry", () => seen.naks.length >= 2, 20_000);
      await delay(500);
      assert.deepEqual(seen.naks, [1, 2]);
      assert.deepEqual(seen.acks, [1], "the other group saw the retry");
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "kafka retry: a subscription without a group retries in memory, counting attempts, then dead-letters with the history",
  async fn() {
    assert.ok(!skip, skip);
    const t = await connectKafka(fast);
    try {
      const topic = `retry.solo.${crypto.randomUUID().slice(0, 8)}`;
      const attempts: number[] = [];
      await t.subscribe(topic, (d) => {
        attempts.push(d.attempts);
        return Promise.reject(new Error(`fail ${d.attempts}`));
      });
      const e = createEnvelope({
        type: "event",
        topic,
        source: "test",
        payload: 1,
        delivery: { maxAttempts: 3, backoff: "fixed" },
      });
      await t.publish(topic, e);
      const letters = await waitFor("the dead letter", async () => {
        const l = await t.deadLetters(topic);
        return l.length > 0 && l;
      }, 20_000);
      assert.deepEqual(attempts, [1, 2, 3]);
      assert.equal(letters[0].envelope.id, e.id);
      assert.equal(letters[0].group, undefined);
      assert.deepEqual(letters[0].errors.map((x) => x.error), [
        "fail 1",
        "fail 2",
        "fail 3",
      ]);
    } finally {
      await t.close();
    }
  },
});
