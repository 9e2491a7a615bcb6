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
  median,
  type RateRun,
  rateRun,
  round,
  transportRun,
} from "./_util.ts";

const args = Deno.args;
const quick = args.includes("--quick");
const flag = (name: string, dflt: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const N = flag("--messages", quick ? 3000 : 15_000);
const ROUNDS = flag("--rounds", quick ? 1 : 3);
const PINGS = quick ? 100 : 300;
const WINDOW = 100;
const brokers = Deno.env.get("KAFKA_BROKERS");
if (!brokers) {
  console.error('KAFKA_BROKERS is not set (run: eval "$(deno task services)")');
  Deno.exit(1);
}
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

const raws: RateRun[] = [];
const ours: RateRun[] = [];
const rawPing: RateRun[] = [];
const ourPing: RateRun[] = [];
const fmt = (r: RateRun | undefined) =>
  JSON.stringify(r, (_, v) => typeof v === "number" ? round(v, 2) : v);
info(`kafka: ${N} messages of 1 KiB, ${ROUNDS} round(s) each`);
for (let r = 0; r < ROUNDS; r++) {
  const id = crypto.randomUUID().slice(0, 8);
  raws.push(await raw(`r${r}.${id}`, N, WINDOW));
  rawPing.push(await raw(`rl${r}.${id}`, PINGS, 1));
  info(`  raw    ${fmt(raws.at(-1))} one at a time ${fmt(rawPing.at(-1))}`);
  ours.push(await plexus(`p${r}.${id}`, N, WINDOW));
  ourPing.push(await plexus(`pl${r}.${id}`, PINGS, 1));
  info(`  plexus ${fmt(ours.at(-1))} one at a time ${fmt(ourPing.at(-1))}`);
}
await admin.disconnect();
const rawPerS = median(raws.map((r) => r.perS));
const ourPerS = median(ours.map((r) => r.perS));
const p = (runs: RateRun[], k: "p50" | "p99") =>
  round(median(runs.map((r) => r[k])), 2);
info(
  `raw kafkajs: ${round(rawPerS)} msg/s; one at a time p50 ${
    p(rawPing, "p50")
  } ms, p99 ${p(rawPing, "p99")} ms`,
);
info(
  `plexus:      ${round(ourPerS)} msg/s; one at a time p50 ${
    p(ourPing, "p50")
  } ms, p99 ${p(ourPing, "p99")} ms`,
);
console.log(JSON.stringify({
  bench: "kafka",
  metric: "messages_per_s",
  unit: "1/s",
  value: round(ourPerS),
  baseline: {
    name: "raw kafkajs idempotent send / eachBatch / commitOffsets",
    value: round(rawPerS),
  },
  ratio: round(ourPerS / rawPerS, 2),
  p50_ms: p(ourPing, "p50"),
  p99_ms: p(ourPing, "p99"),
  baseline_p50_ms: p(rawPing, "p50"),
  baseline_p99_ms: p(rawPing, "p99"),
  messages: N,
}));
Deno.exit(0);
