import assert from "node:assert/strict";
import { createEnvelope } from "../../core/envelope.ts";
import { createTestKernel } from "../../core/testing.ts";
import type { Delivery } from "../../core/transport.ts";
import { sample } from "../../tests/conformance/_telemetry_cases.ts";
import { waitFor } from "../../testing/conformance.ts";
import redisStreams from "./plugin.ts";
import type { RedisStreamsTransport } from "./transport.ts";
import { dlqKey, partitionKey, partitionOf, streamKey } from "./wire.ts";

const url = Deno.env.get("REDIS_URL");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const hasCli = await new Deno.Command("redis-cli", { args: ["--version"] })
  .output().then((o) => o.success, () => false);
const skip = !url
  ? 'REDIS_URL is not set (run: eval "$(deno task services)")'
  : !hasCli
  ? "redis-cli is not installed"
  : undefined;
if (skip && !(required && !url)) {
  console.log(`ignored: redis-streams garbage: ${skip}`);
}

const opts = {
  ignore: skip !== undefined && !(required && !url),
  sanitizeOps: false,
  sanitizeResources: false,
};

/**
 * `redis-cli XADD stream * …fields`, the last value read from stdin (`-x`,
 * byte for byte) when `last` is given. Returns the entry id.
 */
async function xadd(
  stream: string,
  fields: string[],
  last?: Uint8Array | string,
): Promise<string> {
  const child = new Deno.Command("redis-cli", {
    args: [
      "-u",
      url!,
      ...(last === undefined ? [] : ["-x"]),
      "XADD",
      stream,
      "*",
      ...fields,
    ],
    stdin: last === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (last !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(
      typeof last === "string" ? new TextEncoder().encode(last) : last,
    );
    await w.close();
  }
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout).trim();
  assert.ok(
    out.success && /^\d+-\d+$/.test(text),
    `redis-cli XADD ${stream} failed: ${text} ${
      new TextDecoder().decode(out.stderr)
    }`,
  );
  return text;
}

Deno.test({
  ...opts,
  name:
    "redis-streams: garbage written with redis-cli XADD (bad JSON, missing fields, wrong types, non-UTF-8, oversize) is dead-lettered with a reason, counted, and never stalls the topic's stream or a key's partition stream",
  async fn() {
    assert.ok(!skip, skip);
    const prefix = `plexus-garbage-${crypto.randomUUID().slice(0, 8)}:`;
    await using t = await createTestKernel([redisStreams], {
      pluginConfig: {
        "redis-streams": {
          url,
          prefix,
          blockMs: 100,
          maxMessageBytes: 100_000,
          partitions: 4,
        },
      },
    });
    const transport = t.kernel.get<RedisStreamsTransport>(
      "transport:redis-streams",
    );
    try {
      const topic = `garbage.t${crypto.randomUUID().slice(0, 8)}`;
      const got: Delivery[] = [];
      await transport.subscribe(topic, async (d) => {
        got.push(d);
        await d.ack();
      }, { group: "g" });
      const good = (n: number) =>
        createEnvelope({ type: "event", topic, source: "raw", payload: { n } });
      const badBytes = new Uint8Array([0x7b, 0xff, 0xfe, 0x22, 0x7d]);
      // [fields, the last value (from stdin, as bytes)]
      const garbage: [string[], (Uint8Array | string)?][] = [
        // bad JSON: a JSON-valued field that is not JSON
        [["payload", "1", "headers", '{"x-trace":']],
        // missing fields: members given empty
        [["id", "", "source", "", "payload", "1"]],
        // wrong types
        [["timestamp", "yesterday", "priority", "hi", "payload", "1"]],
        // non-UTF-8 bytes in the payload
        [["payload"], badBytes],
        // oversize
        [["payload"], JSON.stringify("x".repeat(100_001))],
      ];
      const main = streamKey(prefix, topic);
      const keyed = partitionKey(prefix, topic, partitionOf("k1", 4));
      const bad: string[] = [];
      const expected: string[] = [];
      const keyedOrder: string[] = [];
      for (const [fields, last] of garbage) {
        // Each bad entry is followed by a good one, on the topic's stream
        // and on the key's partition stream.
        bad.push(await xadd(main, fields, last));
        bad.push(await xadd(keyed, ["key", "k1", ...fields], last));
        const e1 = good(1);
        const e2 = good(2);
        await transport.publish(topic, e1);
        await transport.publish(topic, e2, { key: "k1" });
        expected.push(e1.id, e2.id);
        keyedOrder.push(e2.id);
      }
      await waitFor(
        `the ${expected.length} good messages`,
        () => got.length >= expected.length,
        10_000,
      );
      assert.deepEqual(
        got.map((d) => d.envelope.id).sort(),
        [...expected].sort(),
      );
      assert.deepEqual(
        got.filter((d) => d.key === "k1").map((d) => d.envelope.id),
        keyedOrder,
        "the key's messages in order",
      );
      await waitFor(
        `${bad.length} bad messages counted`,
        () =>
          sample(t.metrics, "plexus_transport_dead_lettered_total", {
            transport: "redis-streams",
            topic,
            reason: "bad_message",
          }) === bad.length,
        10_000,
      );
      const letters = await transport.deadLetters!(topic);
      assert.equal(letters.length, bad.length);
      const reasons = letters.map((l) => l.reason);
      for (
        const pattern of [
          /^bad_message: field 'headers' is not JSON: \{"x-trace":$/,
          /^bad_message: entry \d+-\d+ is not an envelope: id: /,
          /^bad_message: entry \d+-\d+ is not an envelope: timestamp: /,
          /^bad_message: entry \d+-\d+ field 'payload' is not UTF-8$/,
          /^bad_message: entry \d+-\d+ is 100003 bytes; the limit is 100000 bytes$/,
        ]
      ) {
        assert.equal(
          reasons.filter((r) => pattern.test(r)).length,
          2,
          `${pattern} in ${JSON.stringify(reasons)}`,
        );
      }
      assert.ok(letters.every((l) => l.group === "g" && l.attempts === 1));
      for (const l of letters) {
        const raw = l.envelope.payload as Record<string, string>;
        assert.equal(raw["dlq.reason"], l.reason, "kept as its raw fields");
      }
      // The bad bytes are kept as they came in the dead-letter stream.
      const stored = await transport.redis.xrangeBuffer(
        dlqKey(prefix, topic),
        "-",
        "+",
      );
      const payloads = stored.map(([, f]) => {
        const i = f.findIndex((b) => b.toString() === "payload");
        return new Uint8Array(f[i + 1]);
      });
      assert.equal(
        payloads.filter((p) => p.join() === badBytes.join()).length,
        2,
        "the non-UTF-8 payload kept byte for byte",
      );
      const logged = t.logs.filter((r) =>
        r.msg === "message dead-lettered" && r.topic === topic
      );
      assert.deepEqual(
        logged.map((r) => r.messageId).sort(),
        [...bad].sort(),
        "logged with their entry ids",
      );
      assert.ok(
        t.metrics.render().includes(
          `plexus_transport_dead_lettered_total{reason="bad_message",topic="${topic}",transport="redis-streams"} ${bad.length}`,
        ),
        "/metrics shows the count",
      );
      // Nothing left pending in the group on either stream.
      for (const stream of [main, keyed]) {
        await waitFor(
          `nothing pending on ${stream}`,
          async () =>
            ((await transport.redis.xpending(stream, "g")) as [number])[0] ===
              0,
          5000,
        );
      }
    } finally {
      const keys = await transport.redis.keys(`${prefix}*`);
      if (keys.length) await transport.redis.del(...keys);
    }
  },
});
