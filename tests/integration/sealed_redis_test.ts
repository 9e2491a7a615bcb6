/**
 * Sealed payloads on Redis Streams: what Redis stores (read with redis-cli
 * XRANGE, the DLQ stream too) holds no plaintext, and each refusal is
 * dead-lettered with its reason (tests/integration/_sealed.ts).
 */
import assert from "node:assert/strict";
import { connectRedisStreams } from "../../transports/redis-streams/transport.ts";
import {
  refusesAndDeadLetters,
  type SealedBroker,
  storesNoPlaintext,
} from "./_sealed.ts";

const url = Deno.env.get("REDIS_URL");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const hasCli = await new Deno.Command("redis-cli", { args: ["--version"] })
  .output().then((o) => o.success, () => false);
const skip = !url
  ? 'REDIS_URL is not set (run: eval "$(deno task services)")'
  : !hasCli
  ? "redis-cli is not installed"
  : undefined;
if (skip && !required) console.log(`ignored: sealed redis: ${skip}`);

async function cli(...args: string[]): Promise<string> {
  const out = await new Deno.Command("redis-cli", {
    args: ["-u", url!, "--no-raw", ...args],
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout);
}

const broker: SealedBroker = {
  connect: () => connectRedisStreams({ url, blockMs: 200 }),
  async stored(topic, _messages, dead) {
    // Every stream of the topic: its partitions and its dead letters.
    const keys = (await cli("--scan", "--pattern", `plexus:*${topic}*`))
      .split("\n").map((l) => l.replace(/^"|"$/g, "").trim()).filter(Boolean);
    assert.ok(keys.length > 0, `no Redis keys for ${topic}`);
    let out = "";
    for (const key of keys) {
      if ((await cli("TYPE", key)).trim() !== "stream") continue;
      // --no-raw quotes values: unescape so the JSON reads as stored.
      out += (await cli("XRANGE", key, "-", "+")).replaceAll('\\"', '"');
    }
    if (dead > 0) {
      assert.ok(out.includes("sealed "), `no dead letters in ${out}`);
    }
    return out;
  },
  timeoutMs: 10_000,
};

const opts = {
  ignore: skip !== undefined && !required,
  sanitizeOps: false,
  sanitizeResources: false,
};

Deno.test({
  ...opts,
  name:
    "sealed redis: the subscriber gets the plaintext while redis-cli XRANGE shows only ciphertext",
  async fn() {
    assert.ok(!skip, skip);
    await storesNoPlaintext(broker, "sealed-redis");
  },
});

Deno.test({
  ...opts,
  name:
    "sealed redis: a non-recipient, a tampered, re-addressed, replayed, late or plain message is dead-lettered with its reason, and the node keeps serving",
  async fn() {
    assert.ok(!skip, skip);
    await refusesAndDeadLetters(broker, "sealed-redis");
  },
});
