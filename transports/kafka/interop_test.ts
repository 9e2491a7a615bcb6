import assert from "node:assert/strict";
import { createEnvelope } from "../../core/envelope.ts";
import type { Delivery } from "../../core/transport.ts";
import { waitFor } from "../../testing/conformance.ts";
import { connectKafka } from "./transport.ts";
import { dlqTopic, kafkaTopic } from "./wire.ts";

const brokers = Deno.env.get("KAFKA_BROKERS");
const libs = Deno.env.get("PLEXUS_KAFKA_LIBS");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const skip = !brokers
  ? 'KAFKA_BROKERS is not set (run: eval "$(deno task services)")'
  : !libs
  ? "PLEXUS_KAFKA_LIBS (Kafka's console tools) is not set"
  : undefined;
if (skip && !required) console.log(`ignored: kafka interop: ${skip}`);

const opts = {
  ignore: skip !== undefined && !required,
  sanitizeOps: false,
  sanitizeResources: false,
};

/** Runs one of Kafka's command-line tools (a JVM start: 2-4 s). */
async function tool(
  main: string,
  args: string[],
  stdin?: string,
): Promise<string> {
  const child = new Deno.Command("java", {
    args: ["-cp", `${libs}/*`, main, "--bootstrap-server", brokers!, ...args],
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const err = new TextDecoder().decode(out.stderr);
  assert.ok(out.success, `${main} exited ${out.code}: ${err.slice(-800)}`);
  return new TextDecoder().decode(out.stdout);
}

Deno.test({
  ...opts,
  name:
    "kafka interop: records written by Kafka's console producer are consumed, and a garbage one goes to the DLQ without stalling its partition",
  async fn() {
    assert.ok(!skip, skip);
    const t = await connectKafka({ brokers, sessionTimeoutMs: 6000 });
    try {
      const topic = `interop.in.${crypto.randomUUID().slice(0, 8)}`;
      const got: Delivery[] = [];
      await t.subscribe(topic, async (d) => {
        got.push(d);
        await d.ack();
      }, { group: "interop" });
      // headers TAB key TAB value, as parse.headers/parse.key read them.
      await tool(
        "org.apache.kafka.tools.ConsoleProducer",
        [
          "--topic",
          kafkaTopic("plexus.", topic),
          "--property",
          "parse.key=true",
          "--property",
          "parse.headers=true",
        ],
        [
          'plexus-type:command,plexus-source:cli\tk1\t{"n":1}',
          "plexus-type:shout\tk1\tgarbage",
          "plexus-id:third\tk1\tplain text",
        ].join("\n") + "\n",
      );
      await waitFor(
        "two console-produced messages",
        () => got.length >= 2,
        20_000,
      );
      assert.equal(got.length, 2);
      assert.deepEqual(got[0].envelope.payload, { n: 1 });
      assert.equal(got[0].envelope.type, "command");
      assert.equal(got[0].envelope.source, "cli");
      assert.equal(got[0].key, "k1");
      assert.equal(got[1].envelope.id, "third");
      assert.equal(got[1].envelope.payload, "plain text");
      const letters = await waitFor(
        "the garbage record's dead letter",
        async () => {
          const l = await t.deadLetters(topic);
          return l.length > 0 && l;
        },
        20_000,
      );
      assert.equal(letters.length, 1);
      assert.match(letters[0].reason, /^bad_message: .*type/);
      assert.equal(
        (letters[0].envelope.payload as { value: string }).value,
        "garbage",
      );
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "kafka interop: what the transport publishes is readable by Kafka's console consumer (JSON value, key, plexus-* headers)",
  async fn() {
    assert.ok(!skip, skip);
    const t = await connectKafka({ brokers });
    try {
      const topic = `interop.out.${crypto.randomUUID().slice(0, 8)}`;
      const e = createEnvelope({
        type: "event",
        topic,
        source: "plexus-test",
        payload: { order: 7, note: "é" },
      });
      await t.publish(topic, e, { key: "customer-7" });
      const out = await tool(
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        [
          "--topic",
          kafkaTopic("plexus.", topic),
          "--from-beginning",
          "--max-messages",
          "1",
          "--timeout-ms",
          "20000",
          "--property",
          "print.key=true",
          "--property",
          "print.headers=true",
        ],
      );
      const line = out.trim().split("\n").pop()!;
      const [headers, key, value] = line.split("\t");
      assert.equal(key, "customer-7");
      assert.deepEqual(JSON.parse(value), { order: 7, note: "é" });
      assert.ok(headers.includes(`plexus-id:${e.id}`), headers);
      assert.ok(headers.includes("plexus-source:plexus-test"), headers);
      assert.equal(dlqTopic("plexus.", topic), `plexus._dlq.${topic}`);
    } finally {
      await t.close();
    }
  },
});
