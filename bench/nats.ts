/**
 * NATS JetStream transport: publish → consume messages/s for 1 KiB messages
 * and end-to-end p50/p99 latency, versus the raw client
 * (`@nats-io/transport-node` + `@nats-io/jetstream`) doing the same
 * operations in the same run.
 *
 *   eval "$(deno task services)"
 *   deno run -A bench/nats.ts [--quick] [--messages N] [--rounds R] [--partitions P]
 *
 * Both sides, on a fresh stream each round, in one process, against the
 * services' nats-server (file storage, the server's default sync):
 * - a producer (its own connection) sends N messages in windows of 100 concurrent JetStream
 *   publishes, each awaiting its stored acknowledgement (raw: `js.publish`
 *   of the same bytes with the same `Nats-Msg-Id`; Plexus:
 *   `transport.publish`);
 * - one durable pull consumer (another connection) handles every message and acks it (raw: one
 *   `consume()` with 100 messages buffered, `ack()` each; Plexus: a
 *   `subscribe` handler in a group, `maxInFlight: 100`, which also decodes
 *   and validates each envelope).
 * Rate = N / (first publish → last handled). Latency (handler start −
 * publish call) is measured in a second phase that sends one message at a
 * time and waits for it. Rounds alternate raw/Plexus; medians are reported;
 * ratio = Plexus / raw messages/s.
 *
 * @module
 */
import { connect, headers } from "@nats-io/transport-node";
import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connectNats } from "../transports/nats/transport.ts";
import { encodeBody, streamOf } from "../transports/nats/wire.ts";
import {
  kibEnvelopes,
  numFlag,
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
const PINGS = quick ? 100 : 300;
const WINDOW = 100;
const PARTITIONS = numFlag("partitions", 8);
const servers = serviceUrl("NATS_URL");
const tick = () => new Promise((r) => setTimeout(r, 0));

const nc = await connect({ servers });
const jsm = await jetstreamManager(nc);

async function raw(topic: string, n: number, window: number): Promise<RateRun> {
  // Two connections, as the two Plexus transports have.
  const [pubNc, subNc] = await Promise.all([
    connect({ servers }),
    connect({ servers }),
  ]);
  const js = jetstream(pubNc);
  const stream = `BENCHRAW_${topic.replaceAll(".", "_")}`;
  const subject = `benchraw.${topic}`;
  await jsm.streams.add({ name: stream, subjects: [subject] });
  await jsm.consumers.add(stream, {
    durable_name: "g",
    ack_policy: AckPolicy.Explicit,
    max_ack_pending: 1000,
  });
  const sentAt = new Map<string, number>();
  const lat: number[] = [];
  const all = kibEnvelopes(topic, n);
  const consumer = await jetstream(subNc).consumers.get(stream, "g");
  const msgs = await consumer.consume({ max_messages: WINDOW });
  const consuming = (async () => {
    let handled = 0;
    for await (const m of msgs) {
      lat.push(performance.now() - sentAt.get(m.headers!.get("Nats-Msg-Id"))!);
      m.ack();
      if (++handled >= n) break;
    }
  })();
  const t0 = performance.now();
  for (let i = 0; i < n; i += window) {
    await Promise.all(
      all.slice(i, i + window).map(async (e) => {
        const h = headers();
        h.set("Nats-Msg-Id", e.id);
        sentAt.set(e.id, performance.now());
        await js.publish(subject, encodeBody(e), { headers: h });
      }),
    );
    if (window === 1) { while (lat.length <= i) await tick(); }
  }
  await consuming;
  const ms = performance.now() - t0;
  msgs.stop();
  await Promise.all([pubNc.close(), subNc.close()]);
  await jsm.streams.delete(stream);
  return rateRun(n, ms, lat);
}

async function plexus(
  topic: string,
  n: number,
  window: number,
): Promise<RateRun> {
  const opts = { servers, prefix: "bench.", partitions: PARTITIONS };
  const pub = await connectNats(opts);
  const sub = await connectNats(opts);
  const run = await transportRun(pub, sub, topic, {
    n,
    window,
    maxInFlight: WINDOW,
  });
  await sub.close();
  await pub.close();
  await jsm.streams.delete(streamOf("bench.", topic)).catch(() => {});
  return run;
}

const pid = await servicePid("nats");
await runBrokerBench({
  bench: "nats",
  rawLabel: "raw nats.js",
  baselineName: "raw @nats-io/jetstream publish / consume / ack",
  messages: N,
  rounds: ROUNDS,
  pings: PINGS,
  window: WINDOW,
  raw,
  plexus,
  server: pid === undefined ? undefined : { pid, label: "nats-server" },
  topic: (tag, id) => `${tag}${id}.t`,
  extra: { partitions: PARTITIONS },
});
await nc.close();
Deno.exit(0);
