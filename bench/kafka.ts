/**
 * Kafka transport: publish → consume messages/s for 1 KiB messages and
 * end-to-end p50/p99 latency, versus raw kafkajs doing the same operations
 * (produce, consume, commit) in the same run.
 *
 *   eval "$(deno task services)"
 *   deno run -A bench/kafka.ts [--quick] [--messages N] [--rounds R]
 *
 * Both sides, on a fresh 3-partition topic each round, in one process:
 * - a producer sends N messages in windows of 100 concurrent publishes
 *   (raw: one idempotent `send` of 100 records, acks = all; Plexus: 100
 *   `transport.publish` calls, which its producer batches);
 * - one consumer in a group handles every message and commits (raw: an
 *   `eachBatch` loop committing after each batch, as a plain client does;
 *   Plexus: a `subscribe` handler, `maxInFlight: 100`, acking each).
 * Records are the same bytes (wire.ts `encodeRecord`). Rate = N / (first
 * publish → last handled). Latency (handler start − publish call) is
 * measured in a second phase that sends one message at a time and waits for
 * it. Rounds alternate raw/Plexus; medians are reported; ratio = Plexus /
 * raw messages/s. The client choice (kafkajs vs @platformatic/kafka) is
 * measured by bench/_kafka_clients.ts.
 *
 * @module
 */
import { Kafka, logLevel, Partitioners } from "kafkajs";
import { connectKafka } from "../transports/kafka/transport.ts";
import { encodeRecord } from "../transports/kafka/wire.ts";
import {
  info,
  kibEnvelopes,
  type RateRun,
  rateRun,
  transportRun,
} from "./_util.ts";
import { brokerArgs, runBrokerBench, serviceUrl } from "./_broker.ts";

const { quick, messages: N, rounds: ROUNDS } = brokerArgs(15_000);
const PINGS = quick ? 100 : 300;
const WINDOW = 100;
const brokers = serviceUrl("KAFKA_BROKERS");
const tick = () => new Promise((r) => setTimeout(r, 0));

const kafka = new Kafka({
  clientId: "bench-raw",
  brokers: brokers.split(","),
  logLevel: logLevel.NOTHING,
});
const admin = kafka.admin();
await admin.connect();

async function raw(topic: string, n: number, window: number): Promise<RateRun> {
  const name = `bench.raw.${topic}`;
  await admin.createTopics({
    topics: [{ topic: name, numPartitions: 3 }],
    waitForLeaders: true,
  }).catch((err) =>
    info(`  (createTopics ${name}: ${err.message}; continuing)`)
  );
  const producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  const consumer = kafka.consumer({
    groupId: `bench.raw.${topic}`,
    maxWaitTimeInMs: 500,
  });
  await Promise.all([producer.connect(), consumer.connect()]);
  await consumer.subscribe({ topics: [name], fromBeginning: true });
  const sentAt = new Map<string, number>();
  const lat: number[] = [];
  let handled = 0;
  let done = () => {};
  const finished = new Promise<void>((r) => (done = r));
  let joined = () => {};
  const ready = new Promise<void>((r) => (joined = r));
  consumer.on(consumer.events.GROUP_JOIN, () => joined());
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch, resolveOffset }) => {
      for (const m of batch.messages) {
        const id = m.headers?.["plexus-id"]?.toString() ?? "";
        lat.push(performance.now() - sentAt.get(id)!);
        resolveOffset(m.offset);
        handled++;
      }
      await consumer.commitOffsets([{
        topic: batch.topic,
        partition: batch.partition,
        offset: String(Number(batch.lastOffset()) + 1),
      }]);
      if (handled >= n) done();
    },
  });
  await ready;
  const all = kibEnvelopes(topic, n);
  const t0 = performance.now();
  for (let i = 0; i < n; i += window) {
    const slice = all.slice(i, i + window);
    for (const e of slice) sentAt.set(e.id, performance.now());
    await producer.send({
      topic: name,
      acks: -1,
      messages: slice.map((e) => encodeRecord(e)),
    });
    if (window === 1) { while (lat.length <= i) await tick(); }
  }
  await finished;
  const ms = performance.now() - t0;
  await Promise.all([consumer.disconnect(), producer.disconnect()]);
  await admin.deleteTopics({ topics: [name] }).catch(() => {});
  return rateRun(n, ms, lat);
}

async function plexus(
  topic: string,
  n: number,
  window: number,
): Promise<RateRun> {
  const opts = { brokers, prefix: "bench.plexus.", fetchMaxWaitMs: 500 };
  const pub = await connectKafka(opts);
  const sub = await connectKafka(opts);
  const run = await transportRun(pub, sub, topic, {
    n,
    window,
    maxInFlight: WINDOW,
  });
  await sub.close();
  await pub.close();
  await admin.deleteTopics({
    topics: [`bench.plexus.${topic}`, `bench.plexus._retry.g.${topic}`],
  }).catch(() => {});
  return run;
}

await runBrokerBench({
  bench: "kafka",
  rawLabel: "raw kafkajs",
  baselineName: "raw kafkajs idempotent send / eachBatch / commitOffsets",
  messages: N,
  rounds: ROUNDS,
  pings: PINGS,
  window: WINDOW,
  raw,
  plexus,
});
await admin.disconnect();
Deno.exit(0);
