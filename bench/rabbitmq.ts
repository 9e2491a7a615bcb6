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
  flag,
  kibEnvelopes,
  type RateRun,
  rateRun,
  transportRun,
} from "./_util.ts";
import {
  brokerArgs,
  runBrokerBench,
  servicePid,
  serviceUrl,
} from "./_broker.ts";

const { quick, messages: N, rounds: ROUNDS } = brokerArgs(15_000);
const QUEUE_TYPE = (flag("queue-type") ?? "classic") as "classic" | "quorum";
const PINGS = quick ? 100 : 300;
const WINDOW = 100;
const url = serviceUrl("AMQP_URL");
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

const pid = await servicePid("rabbitmq");
await runBrokerBench({
  bench: "rabbitmq",
  rawLabel: "raw rabbitmq-client",
  baselineName: "raw rabbitmq-client confirm publish / consume / ack",
  messages: N,
  rounds: ROUNDS,
  pings: PINGS,
  window: WINDOW,
  raw,
  plexus,
  server: pid === undefined ? undefined : { pid, label: "rabbitmq" },
  topic: (tag, id) => `${tag}${id}.t`,
  headerNote: `${QUEUE_TYPE} queues`,
  extra: { queue_type: QUEUE_TYPE },
});
Deno.exit(0);
