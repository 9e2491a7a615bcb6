import assert from "node:assert/strict";
import { createEnvelope } from "../../core/envelope.ts";
import type { Delivery } from "../../core/transport.ts";
import { waitFor } from "../../testing/conformance.ts";
import { connectRedisStreams } from "./transport.ts";
import { partitionOf } from "./wire.ts";

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
  console.log(`ignored: redis-streams interop: ${skip}`);
}

async function cli(...args: string[]): Promise<string> {
  const out = await new Deno.Command("redis-cli", {
    args: ["-u", url!, "--no-raw", ...args],
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout);
}

const opts = {
  ignore: skip !== undefined && !(required && !url),
  sanitizeOps: false,
  sanitizeResources: false,
};

Deno.test({
  ...opts,
  name:
    "redis-streams interop: an entry written by redis-cli XADD in the documented layout is consumed",
  async fn() {
    assert.ok(
      url,
      "REDIS_URL required (PLEXUS_REQUIRE_SERVICES=1) but not set",
    );
    const t = await connectRedisStreams({ url });
    try {
      const topic = `interop.${crypto.randomUUID().slice(0, 8)}`;
      const got: Delivery[] = [];
      await t.subscribe(topic, async (d) => {
        got.push(d);
        await d.ack();
      }, { group: "interop" });
      await cli(
        "XADD",
        `plexus:${topic}`,
        "*",
        "type",
        "command",
        "source",
        "cli",
        "payload",
        '{"n":1}',
        "headers",
        '{"x-trace":"abc"}',
        "key",
        "k1",
      );
      await cli("XADD", `plexus:${topic}`, "*", "payload", "plain text");
      await waitFor("two deliveries", () => got.length >= 2, 5000);
      assert.equal(got[0].envelope.type, "command");
      assert.equal(got[0].envelope.source, "cli");
      assert.deepEqual(got[0].envelope.payload, { n: 1 });
      assert.deepEqual(got[0].envelope.headers, { "x-trace": "abc" });
      assert.equal(got[0].key, "k1");
      assert.equal(got[1].envelope.payload, "plain text");
      assert.equal(got[1].envelope.topic, topic);
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "redis-streams interop: what we publish reads back with redis-cli XRANGE",
  async fn() {
    assert.ok(
      url,
      "REDIS_URL required (PLEXUS_REQUIRE_SERVICES=1) but not set",
    );
    const t = await connectRedisStreams({ url });
    try {
      const topic = `interop.${crypto.randomUUID().slice(0, 8)}`;
      const e = createEnvelope({
        type: "event",
        topic,
        source: "plexus",
        payload: { total: 42 },
        headers: { a: "b" },
      });
      await t.publish(topic, e, { key: "order-9" });
      // A keyed message lives in partition FNV-1a("order-9") mod 8 = 5 (0x237fc0d5 % 8).
      assert.equal(partitionOf("order-9", 8), 5);
      const out = await cli("--json", "XRANGE", `plexus:${topic}#5`, "-", "+");
      const [[, fields]] = JSON.parse(out) as [string, string[]][];
      const m = new Map<string, string>();
      for (let i = 0; i < fields.length; i += 2) {
        m.set(fields[i], fields[i + 1]);
      }
      assert.equal(m.get("id"), e.id);
      assert.equal(m.get("type"), "event");
      assert.equal(m.get("key"), "order-9");
      assert.deepEqual(JSON.parse(m.get("payload")!), { total: 42 });
      assert.deepEqual(JSON.parse(m.get("headers")!), { a: "b" });
    } finally {
      await t.close();
    }
  },
});
