import assert from "node:assert/strict";
import { createEnvelope } from "../../core/envelope.ts";
import type { Delivery } from "../../core/transport.ts";
import {
  assertPerKeyOrder,
  spawnConsumer,
  waitFor,
} from "../../testing/conformance.ts";
import { connectRedisStreams } from "./transport.ts";

const url = Deno.env.get("REDIS_URL");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
if (!url && !required) {
  console.log(
    'ignored: redis-streams ordering: REDIS_URL is not set (run: eval "$(deno task services)")',
  );
}
const opts = {
  ignore: !url && !required,
  sanitizeOps: false,
  sanitizeResources: false,
};
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

function keyed(topic: string, key: string, seq: number) {
  return createEnvelope({
    type: "event",
    topic,
    source: "test",
    payload: { key, seq },
  });
}

Deno.test({
  ...opts,
  name:
    "redis-streams: a member that joins takes partitions over and per-key order holds across the handover",
  async fn() {
    assert.ok(url, "REDIS_URL required (PLEXUS_REQUIRE_SERVICES=1)");
    const make = () =>
      connectRedisStreams({ url, ackWaitMs: 600, claimIntervalMs: 100 });
    const [pub, a, b] = [await make(), await make(), await make()];
    try {
      const topic = `ordering.join.${crypto.randomUUID().slice(0, 8)}`;
      const starts: { key: string; seq: number }[] = [];
      const overlaps: string[] = [];
      const busy = new Set<string>();
      const by = { a: 0, b: 0 };
      const handled = new Set<string>();
      const handler = (member: "a" | "b") => async (d: Delivery) => {
        const { key, seq } = d.envelope.payload as { key: string; seq: number };
        if (busy.has(key)) overlaps.push(key);
        busy.add(key);
        starts.push({ key, seq });
        await delay(2);
        busy.delete(key);
        by[member]++;
        handled.add(d.envelope.id);
        await d.ack();
      };
      await a.subscribe(topic, handler("a"), { group: "ord", maxInFlight: 4 });
      const keys = Array.from({ length: 10 }, (_, i) => `k${i}`);
      const perKey = 30;
      for (let seq = 0; seq < perKey; seq++) {
        await Promise.all(
          keys.map((k) => pub.publish(topic, keyed(topic, k, seq), { key: k })),
        );
        if (seq === 5) {
          await b.subscribe(topic, handler("b"), {
            group: "ord",
            maxInFlight: 4,
          });
        }
        await delay(40);
      }
      const total = keys.length * perKey;
      await waitFor(
        `${total} messages (have ${handled.size})`,
        () => handled.size >= total,
        20_000,
      );
      assertPerKeyOrder(starts, overlaps);
      assert.equal(starts.length, total, "a message was handled twice");
      assert.ok(by.b > 0, `the joining member handled nothing: ${by.b}`);
      assert.ok(by.a > 0, `the first member handled nothing: ${by.a}`);
      // Both hold leases now: the 8 partitions are split.
      const leases = await pub.redis.keys(`plexus:lease:${topic}#*:ord`);
      const owners = new Set(
        await Promise.all(leases.map((k) => pub.redis.get(k))),
      );
      assert.equal(leases.length, 8);
      assert.equal(owners.size, 2, `one owner holds every partition`);
    } finally {
      await Promise.all([pub.close(), a.close(), b.close()]);
    }
  },
});

Deno.test({
  ...opts,
  name:
    "redis-streams: a SIGKILLed owner's partitions pass to another member and per-key order holds",
  async fn() {
    assert.ok(url, "REDIS_URL required (PLEXUS_REQUIRE_SERVICES=1)");
    const connectModule = new URL(
      "../../tests/conformance/_redis_streams_connect.ts",
      import.meta.url,
    ).href;
    const { default: connect } = await import(connectModule);
    const pub = await connectRedisStreams({ url });
    const survivor = await connect();
    const topic = `ordering.kill.${crypto.randomUUID().slice(0, 8)}`;
    const child = spawnConsumer(connectModule, topic, "ord", "ack:5");
    try {
      await child.next("ready", 20_000);
      const keys = Array.from({ length: 10 }, (_, i) => `k${i}`);
      const perKey = 20;
      const ids = new Set<string>();
      for (let seq = 0; seq < perKey; seq++) {
        await Promise.all(keys.map((k) => {
          const e = keyed(topic, k, seq);
          ids.add(e.id);
          return pub.publish(topic, e, { key: k });
        }));
      }
      await waitFor(
        "40 messages at the child",
        () => child.lines.filter((l) => "got" in l).length >= 40,
        20_000,
      );
      child.kill();
      await child.exited;
      const byChild = child.lines.filter((l) => "got" in l).map((l) =>
        l.payload as { key: string; seq: number }
      );
      const seen = new Set(
        child.lines.filter((l) => "got" in l).map((l) => l.got as string),
      );
      const afterKill: { key: string; seq: number }[] = [];
      await survivor.subscribe(topic, async (d: Delivery) => {
        afterKill.push(d.envelope.payload as { key: string; seq: number });
        seen.add(d.envelope.id);
        await d.ack();
      }, { group: "ord", maxInFlight: 4 });
      await waitFor(
        `all ${ids.size} messages (have ${seen.size})`,
        () => [...ids].every((id) => seen.has(id)),
        20_000,
      );
      for (const k of keys) {
        const before = byChild.filter((p) => p.key === k).map((p) => p.seq);
        const after = afterKill.filter((p) => p.key === k).map((p) => p.seq);
        const ascending = (s: number[]) =>
          s.every((v, i) => i === 0 || v > s[i - 1]);
        assert.ok(ascending(before), `${k} before the kill: ${before}`);
        assert.ok(ascending(after), `${k} after the kill: ${after}`);
        const last = before.length ? before[before.length - 1] : -1;
        if (after.length > 0) {
          // Resumes at the message the child had started (maybe unacked) or the next.
          assert.ok(
            after[0] === last || after[0] === last + 1,
            `${k} resumed at ${after[0]} after ${last}`,
          );
        }
        assert.equal(
          Math.max(last, ...after),
          perKey - 1,
          `${k} did not finish`,
        );
      }
    } finally {
      child.kill();
      await child.exited;
      await Promise.all([pub.close(), survivor.close()]);
    }
  },
});
