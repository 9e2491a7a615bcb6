import assert from "node:assert/strict";
import { Redis } from "ioredis";
import { createEnvelope } from "../../core/envelope.ts";
import { waitFor } from "../../testing/conformance.ts";
import {
  connectRedisStreams,
  type RedisStreamsTransport,
} from "./transport.ts";

const url = Deno.env.get("REDIS_URL");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
if (!url && !required) {
  console.log(
    'ignored: redis-streams ack batching: REDIS_URL is not set (run: eval "$(deno task services)")',
  );
}
const opts = {
  ignore: !url && !required,
  sanitizeOps: false,
  sanitizeResources: false,
};

/** The XACK calls a transport's client makes: ids per call (a spy; the calls still go to Redis). */
function spyXack(redis: Redis): { calls: string[][]; failNext: () => void } {
  const calls: string[][] = [];
  let fail = false;
  const real = redis.xack.bind(redis) as (...a: string[]) => Promise<number>;
  (redis as unknown as { xack: (...a: string[]) => Promise<number> }).xack = (
    ...args: string[]
  ) => {
    calls.push(args.slice(2));
    if (fail) {
      fail = false;
      return Promise.reject(new Error("XACK refused (test)"));
    }
    return real(...args);
  };
  return { calls, failNext: () => (fail = true) };
}

/** Publishes `n` events on "orders", one after another. */
async function publishN(t: RedisStreamsTransport, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await t.publish(
      "orders",
      createEnvelope({
        type: "event",
        topic: "orders",
        source: "test",
        payload: i,
      }),
    );
  }
}

Deno.test(
  "redis-streams: first deliveries acked in one turn go as one XACK, and each ack() resolves only once Redis has it",
  opts,
  async () => {
    const prefix = `plexus-test-ackb-${crypto.randomUUID().slice(0, 8)}:`;
    const t = await connectRedisStreams({
      url,
      prefix,
      blockMs: 100,
      startFrom: "all",
    });
    const check = new Redis(url!);
    const stream = `${prefix}orders`;
    const spy = spyXack(t.redis);
    try {
      const N = 60;
      // Published before the subscription reads: one read, one turn of acks.
      await publishN(t, N);
      // Envelope id → stream entry id, to look each one up once acked.
      const entryOf = new Map<string, string>();
      for (const [entry, fields] of await check.xrange(stream, "-", "+")) {
        entryOf.set(fields[fields.indexOf("id") + 1], entry);
      }
      const pendingAfterAck: string[] = [];
      let acked = 0;
      await t.subscribe("orders", async (d) => {
        await d.ack();
        // Acked means acknowledged in Redis, not queued to be.
        const entry = entryOf.get(d.envelope.id)!;
        const rows = await check.xpending(stream, "g", entry, entry, 1);
        if ((rows as unknown[]).length > 0) pendingAfterAck.push(entry);
        acked++;
      }, { group: "g", maxInFlight: N });
      await waitFor("every delivery acked", () => acked === N, 10_000);
      assert.deepEqual(
        pendingAfterAck,
        [],
        "an ack() resolved before its XACK",
      );
      const ids = spy.calls.flat();
      assert.equal(ids.length, N, "every delivery acked once");
      assert.equal(new Set(ids).size, N);
      assert.ok(
        spy.calls.length <= 3,
        `${spy.calls.length} XACKs for ${N} deliveries read at once`,
      );
      const [pending] = await check.xpending(stream, "g") as [number];
      assert.equal(pending, 0);
    } finally {
      check.disconnect();
      await t.redis.del(stream);
      await t.close();
    }
  },
);

Deno.test(
  "redis-streams: a batch's XACK that fails rejects each of its acks, and the entries stay pending",
  opts,
  async () => {
    const prefix = `plexus-test-ackf-${crypto.randomUUID().slice(0, 8)}:`;
    const t = await connectRedisStreams({
      url,
      prefix,
      blockMs: 100,
      startFrom: "all",
      ackWaitMs: 60_000, // not reclaimed during the test
    });
    const check = new Redis(url!);
    const stream = `${prefix}orders`;
    const spy = spyXack(t.redis);
    try {
      const N = 8;
      const outcomes: string[] = [];
      // Published before the subscription reads: one read, one turn of acks.
      await publishN(t, N);
      spy.failNext();
      await t.subscribe("orders", async (d) => {
        try {
          await d.ack();
          outcomes.push("acked");
        } catch (err) {
          outcomes.push((err as Error).message);
        }
      }, { group: "g", maxInFlight: N });
      await waitFor("every ack settled", () => outcomes.length === N, 10_000);
      assert.equal(spy.calls.length, 1, "one XACK for the turn");
      assert.deepEqual(outcomes, Array(N).fill("XACK refused (test)"));
      const [pending] = await check.xpending(stream, "g") as [number];
      assert.equal(pending, N, "nothing acked by a failed XACK");
    } finally {
      check.disconnect();
      await t.redis.del(stream);
      await t.close();
    }
  },
);
