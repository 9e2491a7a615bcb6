import assert from "node:assert/strict";
import { createEnvelope } from "../../core/envelope.ts";
import type { Delivery } from "../../core/transport.ts";
import { waitFor } from "../../testing/conformance.ts";
import { cliPublish, NATS_CLI, natsCli } from "./_test_util.ts";
import { connectNats } from "./transport.ts";
import {
  consumerOf,
  dlqSubject,
  partitionOf,
  partitionSubject,
  streamOf,
  subjectOf,
} from "./wire.ts";

const url = Deno.env.get("NATS_URL");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const skip = !url
  ? 'NATS_URL is not set (run: eval "$(deno task services)")'
  : !NATS_CLI
  ? "PLEXUS_NATS_CLI (the nats CLI, built by deno task services when Go is installed) is not set"
  : undefined;
if (skip) console.log(`ignored: nats interop: ${skip}`);

// Without Go there is no CLI: ignored even under PLEXUS_REQUIRE_SERVICES
// (the garbage test in telemetry_test.ts then uses the raw client).
const opts = {
  ignore: skip !== undefined && !(required && !url),
  sanitizeOps: false,
  sanitizeResources: false,
};

/** `nats stream get STREAM --last-for SUBJECT --json`: body and headers. */
async function lastFor(
  stream: string,
  subject: string,
): Promise<{ body: string; headers: Map<string, string> }> {
  const out = JSON.parse(
    await natsCli(["stream", "get", stream, "--last-for", subject, "--json"]),
  ) as { data: string; hdrs?: string };
  const headers = new Map<string, string>();
  for (const line of atob(out.hdrs ?? "").split("\r\n").slice(1)) {
    const i = line.indexOf(":");
    if (i > 0) headers.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  const bytes = Uint8Array.from(atob(out.data), (c) => c.charCodeAt(0));
  return { body: new TextDecoder().decode(bytes), headers };
}

Deno.test({
  ...opts,
  name:
    "nats interop: an envelope published with `nats pub` on a key's partition subject is consumed with its key",
  async fn() {
    assert.ok(!skip, skip);
    const t = await connectNats({ servers: url, partitions: 4 });
    try {
      const topic = `interop.in${crypto.randomUUID().slice(0, 8)}`;
      const got: Delivery[] = [];
      await t.subscribe(topic, async (d) => {
        got.push(d);
        await d.ack();
      }, { group: "interop" });
      const e = {
        id: "cli-1",
        type: "command",
        topic,
        source: "cli",
        timestamp: 1_700_000_000_000,
        payload: { n: 1, note: "é" },
      };
      await cliPublish(
        partitionSubject("plexus.", topic, partitionOf("k1", 4)),
        JSON.stringify(e),
        { "Plexus-Key": "k1" },
      );
      await waitFor("the CLI's message", () => got.length >= 1, 10_000);
      assert.equal(got[0].envelope.id, "cli-1");
      assert.equal(got[0].envelope.type, "command");
      assert.deepEqual(got[0].envelope.payload, { n: 1, note: "é" });
      assert.equal(got[0].envelope.priority, 4, "defaults filled");
      assert.equal(got[0].key, "k1");
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "nats interop: what the transport publishes, and a dead letter, read back with `nats stream get` in the documented layout; a terminated message leaves nothing pending",
  async fn() {
    assert.ok(!skip, skip);
    const t = await connectNats({ servers: url });
    try {
      const topic = `interop.out${crypto.randomUUID().slice(0, 8)}`;
      const e = createEnvelope({
        type: "event",
        topic,
        source: "plexus-test",
        payload: { order: 7 },
      });
      await t.publish(topic, e);
      const stream = streamOf("plexus.", topic);
      assert.equal(stream, "PLEXUS_interop");
      const stored = await lastFor(stream, subjectOf("plexus.", topic));
      assert.deepEqual(JSON.parse(stored.body), e);
      assert.equal(stored.headers.get("Nats-Msg-Id"), e.id);

      await t.subscribe(topic, (d) => d.term("refused: no stock"), {
        group: "shop",
      });
      const poison = createEnvelope({
        type: "event",
        topic,
        source: "plexus-test",
        payload: "poison",
      });
      await t.publish(topic, poison, { key: "k9" });
      await waitFor("the dead letter", async () => {
        const l = await t.deadLetters!(topic);
        return l.length > 0;
      }, 10_000);
      const dead = await lastFor("PLEXUS__DLQ", dlqSubject("plexus.", topic));
      assert.equal(JSON.parse(dead.body).id, poison.id);
      assert.equal(dead.headers.get("Plexus-Dlq-Reason"), "refused: no stock");
      assert.equal(dead.headers.get("Plexus-Dlq-Group"), "shop");
      assert.equal(dead.headers.get("Plexus-Dlq-Attempts"), "1");
      assert.equal(dead.headers.get("Plexus-Key"), "k9");
      assert.equal(dead.headers.has("Plexus-Dlq-Truncated"), false);
      // +TERM took it off the partition's consumer: no redelivery waits there.
      const name = `${consumerOf("shop", topic)}_p${partitionOf("k9", 8)}`;
      await waitFor("the consumer to have nothing pending", async () => {
        const info = JSON.parse(
          await natsCli(["consumer", "info", stream, name, "--json"]),
        ) as { num_ack_pending: number; num_redelivered: number };
        return info.num_ack_pending === 0 && info.num_redelivered === 0;
      }, 5000);
    } finally {
      await t.close();
    }
  },
});
