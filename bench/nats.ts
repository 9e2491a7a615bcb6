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
const flag = (name: string, dflt: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const N = flag("--messages", quick ? 3000 : 15_000);
const ROUNDS = flag("--rounds", quick ? 1 : 3);
const PINGS = quick ? 100 : 300;
const WINDOW = 100;
const PARTITIONS = flag("--partitions", 8);
const servers = Deno.env.get("NATS_URL");
if (!servers) {
  console.error('NATS_URL is not set (run: eval "$(deno task services)")');
  Deno.exit(1);
}
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

/** This process's CPU ms, and the services' nats-server's when its pid file is readable. */
const serverPid = await Deno.readTextFile(
  `${Deno.env.get("PLEXUS_RUN") ?? "/tmp/plexus-services"}/nats.pid`,
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
info(`nats: ${N} messages of 1 KiB, ${ROUNDS} round(s) each`);
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
await nc.close();
const rawPerS = median(raws.map((r) => r.perS));
const ourPerS = median(ours.map((r) => r.perS));
const p = (runs: RateRun[], k: "p50" | "p99") =>
  round(median(runs.map((r) => r[k])), 2);
info(
  `raw nats.js: ${round(rawPerS)} msg/s; one at a time p50 ${
    p(rawPing, "p50")
  } ms, p99 ${p(rawPing, "p99")} ms`,
);
info(
  `plexus:      ${round(ourPerS)} msg/s; one at a time p50 ${
    p(ourPing, "p50")
  } ms, p99 ${p(ourPing, "p99")} ms`,
);
const us = (xs: number[]) => round(median(xs), 1);
info(
  `CPU µs per message, client / nats-server: raw ${us(rawCpu.client)} / ${
    us(rawCpu.server)
  }, plexus ${us(ourCpu.client)} / ${us(ourCpu.server)}`,
);
console.log(JSON.stringify({
  bench: "nats",
  metric: "messages_per_s",
  unit: "1/s",
  value: round(ourPerS),
  baseline: {
    name: "raw @nats-io/jetstream publish / consume / ack",
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
  partitions: PARTITIONS,
  messages: N,
}));
Deno.exit(0);
