import assert from "node:assert/strict";
import { createEnvelope } from "../../core/envelope.ts";
import { waitFor } from "../../testing/conformance.ts";
import { connectRedisStreams } from "./transport.ts";

const url = Deno.env.get("REDIS_URL");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
if (!url && !required) {
  console.log(
    'ignored: redis-streams takeover: REDIS_URL is not set (run: eval "$(deno task services)")',
  );
}

Deno.test({
  name:
    "redis-streams: a dead consumer's pending entry is taken over after ackWaitMs and counts the attempt",
  ignore: !url && !required,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    assert.ok(
      url,
      "REDIS_URL required (PLEXUS_REQUIRE_SERVICES=1) but not set",
    );
    const t = await connectRedisStreams({
      url,
      ackWaitMs: 300,
      claimIntervalMs: 100,
    });
    try {
      const topic = `takeover.${crypto.randomUUID().slice(0, 8)}`;
      const stream = `plexus:${topic}`;
      // Another consumer of the group reads the entry and dies without acking.
      await t.redis.xgroup("CREATE", stream, "work", "$", "MKSTREAM");
      const e = createEnvelope({
        type: "event",
        topic,
        source: "test",
        payload: 1,
      });
      await t.publish(topic, e);
      const res = await t.redis.xreadgroup(
        "GROUP",
        "work",
        "dead",
        "COUNT",
        1,
        "STREAMS",
        stream,
        ">",
      );
      assert.ok(res !== null, "the dead consumer read nothing");
      const read = performance.now();
      const got: { id: string; attempts: number }[] = [];
      await t.subscribe(topic, async (d) => {
        got.push({ id: d.envelope.id, attempts: d.attempts });
        await d.ack();
      }, { group: "work" });
      await waitFor("the takeover", () => got.length === 1, 5000);
      assert.equal(got[0].id, e.id);
      assert.equal(got[0].attempts, 2);
      assert.ok(performance.now() - read >= 300, "taken over before ackWaitMs");
      const pending = await t.redis.xpending(stream, "work");
      assert.equal((pending as [number])[0], 0);
    } finally {
      await t.close();
    }
  },
});
