import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createTestKernel } from "../../core/testing.ts";
import type { Delivery } from "../../core/transport.ts";
import { sample } from "../../tests/conformance/_telemetry_cases.ts";
import { waitFor } from "../../testing/conformance.ts";
import kafka from "./plugin.ts";
import type { KafkaTransport } from "./transport.ts";
import { groupId, kafkaTopic } from "./wire.ts";

const brokers = Deno.env.get("KAFKA_BROKERS");
const libs = Deno.env.get("PLEXUS_KAFKA_LIBS");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const skip = !brokers
  ? 'KAFKA_BROKERS is not set (run: eval "$(deno task services)")'
  : !libs
  ? "PLEXUS_KAFKA_LIBS (Kafka's console tools) is not set"
  : undefined;
if (skip && !required) console.log(`ignored: kafka garbage: ${skip}`);

/** Kafka's console producer (one JVM start: 2-4 s), `input` on stdin. */
async function consoleProducer(
  args: string[],
  input: Uint8Array,
): Promise<void> {
  const child = new Deno.Command("java", {
    args: [
      "-cp",
      `${libs}/*`,
      "org.apache.kafka.tools.ConsoleProducer",
      "--bootstrap-server",
      brokers!,
      ...args,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(input);
  await w.close();
  const out = await child.output();
  assert.ok(
    out.success,
    `ConsoleProducer exited ${out.code}: ${
      new TextDecoder().decode(out.stderr).slice(-800)
    }`,
  );
}

const concat = (parts: (string | Uint8Array)[]) => {
  const chunks = parts.map((p) =>
    typeof p === "string" ? new TextEncoder().encode(p) : p
  );
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
};

Deno.test({
  name:
    "kafka: garbage written with Kafka's console producer (bad JSON, missing fields, wrong types, oversize; non-UTF-8 with the client) is dead-lettered with a reason, counted, and never stalls a partition or a key",
  ignore: skip !== undefined && !required,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    assert.ok(!skip, skip);
    await using t = await createTestKernel([kafka], {
      pluginConfig: {
        kafka: {
          brokers,
          sessionTimeoutMs: 6000,
          heartbeatIntervalMs: 300,
          fetchMaxWaitMs: 200,
          closeTimeoutMs: 2000,
          maxMessageBytes: 100_000,
        },
      },
      startTimeoutMs: 30_000,
    });
    const transport = t.kernel.get<KafkaTransport>("transport:kafka");
    const topic = `garbage.t${crypto.randomUUID().slice(0, 8)}`;
    const name = kafkaTopic("plexus.", topic);
    const got: Delivery[] = [];
    await transport.subscribe(topic, async (d) => {
      got.push(d);
      await d.ack();
    }, { group: "g" });

    // Bytes that are not UTF-8 cannot come from Kafka's tools: the console
    // producer (like kafka-producer-perf-test's payload file) reads its
    // input through a UTF-8 decoder that turns them into U+FFFD (shown by
    // the 'mangled' line below). So those two records, each followed by a
    // good one on the same partition, go through the client.
    const badBytes = Buffer.from([0x7b, 0xff, 0xfe, 0x22, 0x7d]);
    const producer = transport.kafka.producer();
    await producer.connect();
    try {
      await producer.send({
        topic: name,
        acks: -1,
        messages: [
          { value: badBytes, partition: 0 },
          { value: '{"n":0}', partition: 0 },
          { key: "k1", value: badBytes },
          { key: "k1", value: '{"n":1}' },
        ],
      });
    } finally {
      await producer.disconnect();
    }

    // headers TAB key TAB value; NULL is no key. Each bad record is followed
    // by a good one, without a key and with the key k1.
    const garbage: [headers: string, value: string][] = [
      // bad JSON: a JSON-valued header that is not JSON
      ['plexus-headers:{"x-trace":', "1"],
      // missing fields: members given empty
      ["plexus-id:,plexus-source:", "1"],
      // wrong types
      ["plexus-timestamp:yesterday,plexus-priority:hi", "1"],
      // oversize
      ["plexus-source:cli", JSON.stringify("x".repeat(100_001))],
    ];
    const lines: (string | Uint8Array)[] = [];
    let n = 2;
    for (const [headers, value] of garbage) {
      for (const key of ["NULL", "k1"]) {
        lines.push(`${headers}\t${key}\t${value}\n`);
        lines.push(`plexus-source:cli\t${key}\t{"n":${n++}}\n`);
      }
    }
    lines.push("plexus-source:cli\tNULL\t", badBytes, "\n");
    await consoleProducer([
      "--topic",
      name,
      "--property",
      "parse.key=true",
      "--property",
      "parse.headers=true",
      "--property",
      "null.marker=NULL",
      // One partition for the records without a key until 1 MB went to it.
      "--producer-property",
      "batch.size=1000000",
    ], concat(lines));

    const good = n + 1; // n = 0 .. n-1, and the mangled one
    await waitFor(
      `the ${good} good records`,
      () => got.length >= good,
      20_000,
    );
    assert.equal(got.length, good);
    const ns = got.map((d) => (d.envelope.payload as { n?: number }).n);
    assert.deepEqual(
      ns.filter((x) => x !== undefined).sort((a, b) => a! - b!),
      Array.from({ length: n }, (_, i) => i),
    );
    assert.deepEqual(
      got.filter((d) => d.key === "k1").map((d) =>
        (d.envelope.payload as { n: number }).n
      ),
      [1, 3, 5, 7, 9],
      "the key's records in order",
    );
    assert.ok(
      got.some((d) => d.envelope.payload === '{\uFFFD\uFFFD"}'),
      "the console producer turned the bytes that are not UTF-8 into U+FFFD",
    );

    const bad = 10;
    await waitFor(
      `${bad} bad records counted`,
      () =>
        sample(t.metrics, "plexus_transport_dead_lettered_total", {
          transport: "kafka",
          topic,
          reason: "bad_message",
        }) === bad,
      20_000,
    );
    const letters = await transport.deadLetters(topic);
    assert.equal(letters.length, bad);
    const reasons = letters.map((l) => l.reason);
    const rec = `record ${name.replaceAll(".", "\\.")}/\\d+@\\d+`;
    for (
      const pattern of [
        /^bad_message: header 'plexus-headers' is not JSON: \{"x-trace":$/,
        new RegExp(`^bad_message: ${rec} is not an envelope: id: `),
        /^bad_message: header 'plexus-timestamp' is not a number: yesterday$/,
        new RegExp(`^bad_message: ${rec} value is not UTF-8$`),
        new RegExp(
          `^bad_message: ${rec} is 100006 bytes; the limit is 100000 bytes$`,
        ),
      ]
    ) {
      assert.equal(
        reasons.filter((r) => pattern.test(r)).length,
        2,
        `${pattern} in ${JSON.stringify(reasons)}`,
      );
    }
    assert.ok(letters.every((l) => l.group === "g" && l.attempts === 0));
    const raw = letters.map((l) =>
      l.envelope.payload as { value: string; headers: Record<string, string> }
    );
    assert.equal(
      raw.filter((r) => r.value === badBytes.toString("base64")).length,
      2,
      "the bytes that are not UTF-8 kept as they came",
    );

    // Behind every bad record, a good one on its partition was delivered
    // (a good record's default id is {kafkaTopic}-{partition}-{offset}).
    const delivered = got.map((d) =>
      d.envelope.id.slice(name.length + 1).split("-").map(Number)
    );
    for (const r of raw) {
      const [, p, offset] = r.headers["plexus-dlq-origin"].split("/");
      assert.equal(r.headers["plexus-dlq-origin"].split("/")[0], name);
      assert.ok(
        delivered.some(([dp, doff]) =>
          dp === Number(p) && doff > Number(offset)
        ),
        `a good record after ${name}/${p}@${offset} was delivered`,
      );
    }
    // And the group's committed offsets reach the end of every partition.
    const ends = await transport.admin.fetchTopicOffsets(name);
    await waitFor("the committed offsets at the partitions' ends", async () => {
      const [committed] = await transport.admin.fetchOffsets({
        groupId: groupId("plexus.", topic, "g"),
        topics: [name],
      });
      return ends.every((e) =>
        Number(e.high) === 0 ||
        committed.partitions.find((c) => c.partition === e.partition)
            ?.offset === e.high
      );
    }, 10_000);

    const logged = t.logs.filter((r) =>
      r.msg === "message dead-lettered" && r.topic === topic
    );
    assert.equal(logged.length, bad);
    assert.match(
      String(logged[0].messageId),
      new RegExp(`^${name}/\\d+/\\d+$`),
    );
    assert.ok(
      t.metrics.render().includes(
        `plexus_transport_dead_lettered_total{reason="bad_message",topic="${topic}",transport="kafka"} ${bad}`,
      ),
      "/metrics shows the count",
    );
  },
});
