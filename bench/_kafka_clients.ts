/**
 * How the Kafka client was chosen: kafkajs and @platformatic/kafka, each
 * producing N 1 KiB records (windows of 100, idempotent, acks = all) and
 * consuming them in a new group from the beginning, committing after each
 * batch, on Deno against the services broker.
 *
 *   eval "$(deno task services)"
 *   deno run -A --no-lock bench/_kafka_clients.ts [--messages N] [--only kafkajs|platformatic]
 *
 * Prints one JSON line per client: produce and consume records/s, or the
 * error / timeout it met. `--no-lock` because @platformatic/kafka is not a
 * dependency of the project: it is imported here by a specifier built at
 * run time (so `deno check` does not fetch it).
 *
 * @module
 */
import { Kafka, logLevel, Partitioners } from "kafkajs";
import { info } from "./_util.ts";

const args = Deno.args;
const flag = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const N = Number(flag("--messages", "20000"));
const only = flag("--only", "");
const LIMIT_MS = 60_000;
const brokers = (Deno.env.get("KAFKA_BROKERS") ?? "127.0.0.1:9092").split(",");
const value = "x".repeat(1024);
const WINDOW = 100;

interface Result {
  client: string;
  produce_per_s?: number;
  consume_per_s?: number;
  consumed?: number;
  error?: string;
}

function withLimit<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${what}: nothing after ${LIMIT_MS} ms`)),
        LIMIT_MS,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}

async function kafkajs(): Promise<Result> {
  const topic = `clients.kafkajs.${crypto.randomUUID().slice(0, 8)}`;
  const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({
    topics: [{ topic, numPartitions: 3 }],
    waitForLeaders: true,
  });
  const producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  await producer.connect();
  let t0 = performance.now();
  for (let i = 0; i < N; i += WINDOW) {
    await producer.send({
      topic,
      acks: -1,
      messages: Array.from({ length: WINDOW }, (_, j) => ({
        key: `k${j % 16}`,
        value,
      })),
    });
  }
  const produce = N / ((performance.now() - t0) / 1000);
  const consumer = kafka.consumer({ groupId: `g.${topic}` });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  let n = 0;
  let done = () => {};
  const all = new Promise<void>((r) => (done = r));
  t0 = performance.now();
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      n += batch.messages.length;
      await consumer.commitOffsets([{
        topic,
        partition: batch.partition,
        offset: String(Number(batch.lastOffset()) + 1),
      }]);
      if (n >= N) done();
    },
  });
  try {
    await withLimit(all, "kafkajs consume");
    return {
      client: "kafkajs@2.2.4",
      produce_per_s: Math.round(produce),
      consume_per_s: Math.round(N / ((performance.now() - t0) / 1000)),
      consumed: n,
    };
  } finally {
    await Promise.allSettled([consumer.disconnect(), producer.disconnect()]);
    await admin.deleteTopics({ topics: [topic] }).catch(() => {});
    await admin.disconnect();
  }
}

async function platformatic(): Promise<Result> {
  const spec = ["npm:@platformatic", "kafka@1.22.0"].join("/");
  // deno-lint-ignore no-explicit-any -- not a project dependency: untyped here
  const pk: any = await import(spec);
  const topic = `clients.platformatic.${crypto.randomUUID().slice(0, 8)}`;
  const producer = new pk.Producer({
    clientId: "clients",
    bootstrapBrokers: brokers,
    serializers: pk.stringSerializers,
    idempotent: true,
    autocreateTopics: true,
  });
  let n = 0;
  try {
    await producer.send({ messages: [{ topic, key: "w", value: "warm-up" }] });
    let t0 = performance.now();
    for (let i = 0; i < N; i += WINDOW) {
      await producer.send({
        messages: Array.from({ length: WINDOW }, (_, j) => ({
          topic,
          key: `k${j % 16}`,
          value,
        })),
      });
    }
    const produce = N / ((performance.now() - t0) / 1000);
    const consumer = new pk.Consumer({
      groupId: `g.${topic}`,
      clientId: "clients",
      bootstrapBrokers: brokers,
      deserializers: pk.stringDeserializers,
    });
    const stream = await consumer.consume({
      topics: [topic],
      mode: pk.MessagesStreamModes.EARLIEST,
      autocommit: false,
    });
    t0 = performance.now();
    let done = () => {};
    const all = new Promise<void>((r) => (done = r));
    // deno-lint-ignore no-explicit-any -- an untyped message
    stream.on("data", (m: any) => {
      if (++n % WINDOW === 0) m.commit();
      if (n >= N + 1) done();
    });
    try {
      await withLimit(all, `@platformatic/kafka consume (${n} received)`);
    } catch (err) {
      return {
        client: "@platformatic/kafka@1.22.0",
        produce_per_s: Math.round(produce),
        consumed: n,
        error: (err as Error).message,
      };
    } finally {
      await stream.close().catch(() => {});
      await consumer.close().catch(() => {});
    }
    return {
      client: "@platformatic/kafka@1.22.0",
      produce_per_s: Math.round(produce),
      consume_per_s: Math.round(N / ((performance.now() - t0) / 1000)),
      consumed: n,
    };
  } finally {
    await producer.close().catch(() => {});
  }
}

info(`kafka clients: ${N} records of 1 KiB each`);
for (
  const [name, run] of [["kafkajs", kafkajs], [
    "platformatic",
    platformatic,
  ]] as const
) {
  if (only && only !== name) continue;
  let r: Result;
  try {
    r = await run();
  } catch (err) {
    r = { client: name, error: (err as Error).message };
  }
  console.log(JSON.stringify(r));
}
Deno.exit(0);
