/**
 * RabbitMQ transport: publish → consume messages/s for 1 KiB messages and
 * end-to-end p50/p99 latency, versus the raw client (`rabbitmq-client`)
 * doing the same operations in the same run.
 *
 *   eval "$(deno task services)"
 *   deno run -A bench/rabbitmq.ts [--quick] [--messages N] [--rounds R] [--queue-type classic|quorum]
 *
 * Both sides, on a fresh queue each round, in one process, against the
 * services' RabbitMQ node:
 * - a producer (its own connection) sends N persistent messages through a
 *   topic exchange in windows of 100 concurrent publishes on a confirm
 *   channel, each awaiting its confirm (raw: `basicPublish` of the same bytes
 *   with the same `message_id`; Plexus: `transport.publish`);
 * - one consumer (another connection) on a durable queue of the same type
 *   handles every message and acks it (raw: `basicConsume` with prefetch
 *   100, `basicAck` each; Plexus: a `subscribe` handler in a group,
 *   `maxInFlight: 100`, which also decodes and validates each envelope).
 * Rate = N / (first publish → last handled). Latency (handler start −
 * publish call) is measured in a second phase that sends one message at a
 * time and waits for it. Rounds alternate raw/Plexus; medians are reported;
 * ratio = Plexus / raw messages/s.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { Connection } from "rabbitmq-client";
import { connectRabbitmq } from "../transports/rabbitmq/transport.ts";
import { groupQueue } from "../transports/rabbitmq/wire.ts";
import {
  cpuPerMessage,
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
const flag = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const N = Number(flag("--messages", quick ? "3000" : "15000"));
const ROUNDS = Number(flag("--rounds", quick ? "1" : "3"));
const QUEUE_TYPE = flag("--queue-type", "classic") as "classic" | "quorum";
const PINGS = quick ? 100 : 300;
const WINDOW = 100;
const url = Deno.env.get("AMQP_URL");
if (!url) {
  console.error('AMQP_URL is not set (run: eval "$(deno task services)")');
  Deno.exit(1);
}
const tick = () => new Promise((r) => setTimeout(r, 0));
/** The transport's connection settings, for the raw side too. */
const connection = () =>
  new Connection({ url, frameMax: 131_072, noDelay: true });

async function raw(topic: string, n: number, window: number): Promise<RateRun> {
  const pubConn = connection();
  const subConn = connection();
  await Promise.all([pubConn.onConnect(5000), subConn.onConnect(5000)]);
  const exchange = "benchraw";
  const queue = `benchraw.${topic}`;
  await pubConn.exchangeDeclare({ exchange, type: "topic", durable: true });
  await pubConn.queueDeclare({
    queue,
    durable: true,
    arguments: QUEUE_TYPE === "quorum" ? { "x-queue-type": "quorum" } : {},
  });
  await pubConn.queueBind({ queue, exchange, routingKey: topic });
  const pub = await pubConn.acquire();
  await pub.confirmSelect();
  const sub = await subConn.acquire();
  await sub.basicQos({ prefetchCount: WINDOW });
  const sentAt = new Map<string, number>();
  const lat: number[] = [];
  const all = kibEnvelopes(topic, n);
  let handled = 0;
  let done = () => {};
  const finished = new Promise<void>((r) => (done = r));
  await sub.basicConsume({ queue }, (m) => {
    lat.push(performance.now() - sentAt.get(m.messageId!)!);
    sub.basicAck({ deliveryTag: m.deliveryTag });
    if (++handled === n) done();
  });
  const t0 = performance.now();
  for (let i = 0; i < n; i += window) {
    await Promise.all(
      all.slice(i, i + window).map((e) => {
        sentAt.set(e.id, performance.now());
        return pub.basicPublish(
          { exchange, routingKey: topic, durable: true, messageId: e.id },
          Buffer.from(JSON.stringify(e)),
        );
      }),
    );
    if (window === 1) { while (lat.length <= i) await tick(); }
  }
  await finished;
  const ms = performance.now() - t0;
  await Promise.all([pub.close(), sub.close()]);
  await pubConn.queueDelete({ queue });
  await Promise.all([pubConn.close(), subConn.close()]);
  return rateRun(n, ms, lat);
}

async function plexus(
  topic: string,
  n: number,
  window: number,
): Promise<RateRun> {
  const opts = { url, prefix: "bench", queueType: QUEUE_TYPE };
  const pub = await connectRabbitmq(opts);
  const sub = await connectRabbitmq(opts);
  const run = await transportRun(pub, sub, topic, {
    n,
    window,
    maxInFlight: WINDOW,
  });
  await sub.close();
  const main = groupQueue("bench", "g", topic);
  await pub.connection.queueDelete({ queue: main }).catch(() => {});
  for (let p = 0; p < 4; p++) {
    await pub.connection.queueDelete({ queue: `${main}.~${p}` }).catch(
      () => {},
    );
  }
  await pub.connection.queueDelete({ queue: `bench.dlq.${topic}` }).catch(
    () => {},
  );
  await pub.close();
  return run;
}

/** This process's CPU ms, and the services' RabbitMQ node's when its pid file is readable. */
const serverPid = await Deno.readTextFile(
  `${Deno.env.get("PLEXUS_RUN") ?? "/tmp/plexus-services"}/rabbitmq.pid`,
).then((s) => Number(s.trim()) || undefined, () => undefined);
const withCpu = cpuPerMessage(serverPid);
const rawCpu = { client: [] as number[], server: [] as number[] };
const ourCpu = { client: [] as number[], server: [] as number[] };

const raws: RateRun[] = [];
const ours: RateRun[] = [];
const rawPing: RateRun[] = [];
const ourPing: RateRun[] = [];
const fmt = (r: RateRun | undefined) =>
  JSON.stringify(r, (_, v) => typeof v === "number" ? round(v, 2) : v);
info(
  `rabbitmq: ${N} messages of 1 KiB, ${ROUNDS} round(s) each, ${QUEUE_TYPE} queues`,
);
for (let r = 0; r < ROUNDS; r++) {
  const id = crypto.randomUUID().slice(0, 8);
  raws.push(await withCpu(N, rawCpu, () => raw(`r${r}${id}.t`, N, WINDOW)));
  rawPing.push(await raw(`rl${r}${id}.t`, PINGS, 1));
  info(`  raw    ${fmt(raws.at(-1))} one at a time ${fmt(rawPing.at(-1))}`);
  ours.push(
    await withCpu(N, ourCpu, () => plexus(`p${r}${id}.t`, N, WINDOW)),
  );
  ourPing.push(await plexus(`pl${r}${id}.t`, PINGS, 1));
  info(`  plexus ${fmt(ours.at(-1))} one at a time ${fmt(ourPing.at(-1))}`);
}
const rawPerS = median(raws.map((r) => r.perS));
const ourPerS = median(ours.map((r) => r.perS));
const p = (runs: RateRun[], k: "p50" | "p99") =>
  round(median(runs.map((r) => r[k])), 2);
info(
  `raw rabbitmq-client: ${round(rawPerS)} msg/s; one at a time p50 ${
    p(rawPing, "p50")
  } ms, p99 ${p(rawPing, "p99")} ms`,
);
info(
  `plexus:              ${round(ourPerS)} msg/s; one at a time p50 ${
    p(ourPing, "p50")
  } ms, p99 ${p(ourPing, "p99")} ms`,
);
const us = (xs: number[]) => round(median(xs), 1);
info(
  `CPU µs per message, client / rabbitmq: raw ${us(rawCpu.client)} / ${
    us(rawCpu.server)
  }, plexus ${us(ourCpu.client)} / ${us(ourCpu.server)}`,
);
console.log(JSON.stringify({
  bench: "rabbitmq",
  metric: "messages_per_s",
  unit: "1/s",
  value: round(ourPerS),
  baseline: {
    name: "raw rabbitmq-client confirm publish / consume / ack",
    value: round(rawPerS),
  },
  ratio: round(ourPerS / rawPerS, 2),
  p50_ms: p(ourPing, "p50"),
  p99_ms: p(ourPing, "p99"),
  baseline_p50_ms: p(rawPing, "p50"),
  baseline_p99_ms: p(rawPing, "p99"),
  cpu_us_per_message: { client: us(ourCpu.client), server: us(ourCpu.server) },
  baseline_cpu_us_per_message: {
    client: us(rawCpu.client),
    server: us(rawCpu.server),
  },
  cpu_ratio: round(
    (median(rawCpu.client) + median(rawCpu.server)) /
      (median(ourCpu.client) + median(ourCpu.server)),
    2,
  ),
  queue_type: QUEUE_TYPE,
  messages: N,
}));
Deno.exit(0);
