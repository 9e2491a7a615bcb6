import assert from "node:assert/strict";
import { Redis } from "ioredis";
import { createEnvelope } from "../../core/envelope.ts";
import { createTestKernel, type TestKernel } from "../../core/testing.ts";
import { waitFor } from "../../testing/conformance.ts";
import redisStreams from "./plugin.ts";

const url = Deno.env.get("REDIS_URL");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
if (!url && !required) {
  console.log(
    'ignored: redis-streams consumers: REDIS_URL is not set (run: eval "$(deno task services)")',
  );
}

const opts = {
  ignore: !url && !required,
  sanitizeOps: false,
  sanitizeResources: false,
};

/** A node (createTestKernel's id is `test-node`) running the redis-streams plugin. */
async function startNode(prefix: string): Promise<TestKernel> {
  return await createTestKernel([redisStreams], {
    pluginConfig: {
      "redis-streams": {
        url,
        prefix,
        partitions: 2,
        ackWaitMs: 300,
        claimIntervalMs: 100,
        blockMs: 100,
      },
    },
  });
}

/** `XINFO CONSUMERS` of a stream and group: name → pending. */
async function consumers(
  redis: Redis,
  stream: string,
  group: string,
): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [name, c] of await consumerInfo(redis, stream, group)) {
    out[name] = c.pending;
  }
  return out;
}

/** `XINFO CONSUMERS` of a stream and group: name → pending and idle ms. */
async function consumerInfo(
  redis: Redis,
  stream: string,
  group: string,
): Promise<Map<string, { pending: number; idle: number }>> {
  const rows = await redis.xinfo("CONSUMERS", stream, group) as unknown[][];
  const out = new Map<string, { pending: number; idle: number }>();
  for (const row of rows) {
    const f = new Map<unknown, unknown>();
    for (let i = 0; i < row.length; i += 2) f.set(row[i], row[i + 1]);
    out.set(String(f.get("name")), {
      pending: Number(f.get("pending")),
      idle: Number(f.get("idle")),
    });
  }
  return out;
}

Deno.test({
  ...opts,
  name:
    "redis-streams: a node restarted three times keeps one consumer per group, named after the node, and removes it on close",
  async fn() {
    assert.ok(
      url,
      "REDIS_URL required (PLEXUS_REQUIRE_SERVICES=1) but not set",
    );
    const prefix = `plexus-cons-${crypto.randomUUID().slice(0, 8)}:`;
    const redis = new Redis(url);
    try {
      const streams = [
        `${prefix}orders`,
        `${prefix}orders#0`,
        `${prefix}orders#1`,
      ];
      const all = async () => {
        const names: string[] = [];
        for (const s of streams) {
          names.push(...Object.keys(await consumers(redis, s, "billing")));
        }
        return [...new Set(names)].sort();
      };
      const running: string[][] = [];
      const afterClose: string[][] = [];
      for (let run = 1; run <= 3; run++) {
        const t = await startNode(prefix);
        try {
          const transport = t.kernel.get("transport:redis-streams");
          const got: string[] = [];
          await transport.subscribe("orders", async (d) => {
            got.push(d.envelope.id);
            await d.ack();
          }, { group: "billing" });
          for (const key of [undefined, "k"]) {
            await transport.publish(
              "orders",
              createEnvelope({
                type: "event",
                topic: "orders",
                source: "test",
                payload: run,
              }),
              { key },
            );
          }
          await waitFor(
            `run ${run}: both handled`,
            () => got.length === 2,
            5000,
          );
          running.push(await all());
        } finally {
          await t.close();
        }
        afterClose.push(await all());
      }
      assert.deepEqual(running, [["test-node"], ["test-node"], ["test-node"]]);
      assert.deepEqual(afterClose, [[], [], []]);
    } finally {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length) await redis.del(...keys);
      redis.disconnect();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "redis-streams: a consumer with pending entries is kept at close, and the restarted node reuses its name and takes them over",
  async fn() {
    assert.ok(
      url,
      "REDIS_URL required (PLEXUS_REQUIRE_SERVICES=1) but not set",
    );
    const prefix = `plexus-cons-${crypto.randomUUID().slice(0, 8)}:`;
    const stream = `${prefix}orders`;
    const redis = new Redis(url);
    try {
      // A run of this node that crashed holding one entry.
      await redis.xgroup("CREATE", stream, "billing", "$", "MKSTREAM");
      const t0 = await startNode(prefix);
      const lost = createEnvelope({
        type: "event",
        topic: "orders",
        source: "test",
        payload: "lost",
      });
      await t0.kernel.get("transport:redis-streams").publish(
        "orders",
        lost,
      );
      await t0.close();
      const read = await redis.xreadgroup(
        "GROUP",
        "billing",
        "test-node",
        "COUNT",
        1,
        "STREAMS",
        stream,
        ">",
      );
      assert.ok(read, "the crashed run read the entry");
      await new Promise((r) => setTimeout(r, 150)); // idle since
      assert.deepEqual(await consumers(redis, stream, "billing"), {
        "test-node": 1,
      });

      // Restarted, it fails the entry (or closes before claiming it).
      const t1 = await startNode(prefix);
      try {
        await t1.kernel.get("transport:redis-streams").subscribe(
          "orders",
          () => Promise.reject(new Error("not yet")),
          { group: "billing" },
        );
        // Reading under the crashed run's name resets that consumer's idle time.
        let idle = Infinity;
        await waitFor("the restarted node reads", async () => {
          idle = (await consumerInfo(redis, stream, "billing")).get("test-node")
            ?.idle ?? Infinity;
          return idle < 50;
        }, 5000).catch((err) => {
          throw new Error(`${err.message}: test-node idle ${idle} ms`);
        });
        assert.deepEqual(await consumers(redis, stream, "billing"), {
          "test-node": 1,
        });
      } finally {
        await t1.close();
      }
      assert.deepEqual(
        await consumers(redis, stream, "billing"),
        { "test-node": 1 },
        "kept: it still has a pending entry",
      );

      // Restarted again, it takes the entry over and, once done, leaves.
      const t2 = await startNode(prefix);
      try {
        const got: { id: string; attempts: number }[] = [];
        await t2.kernel.get("transport:redis-streams").subscribe(
          "orders",
          async (d) => {
            got.push({ id: d.envelope.id, attempts: d.attempts });
            await d.ack();
          },
          { group: "billing" },
        );
        await waitFor("the takeover", () => got.length === 1, 5000);
        assert.equal(got[0].id, lost.id);
        assert.deepEqual(await consumers(redis, stream, "billing"), {
          "test-node": 0,
        });
      } finally {
        await t2.close();
      }
      assert.deepEqual(await consumers(redis, stream, "billing"), {});
    } finally {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length) await redis.del(...keys);
      redis.disconnect();
    }
  },
});
