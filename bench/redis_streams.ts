/**
 * Redis Streams transport: publish → consume messages/s for 1 KiB messages
 * and end-to-end p50/p99 latency, versus raw ioredis doing the same
 * operations in the same run.
 *
 *   eval "$(deno task services)"
 *   deno run -A bench/redis_streams.ts [--quick] [--messages N] [--rounds R]
 *
 * Both sides, on a fresh stream each round, in one process:
 * - a producer sends N messages in windows of 100 concurrent publishes
 *   (ioredis auto-pipelining turns each window into one pipeline);
 * - one consumer in a group reads with XREADGROUP (COUNT 100, BLOCK) and
 *   acks each message with its own XACK after handling it (raw: a batch at
 *   a time, as a plain client loop does; Plexus: its subscription loop).
 * Raw: `XADD … MAXLEN ~ 100000 * f v …` with the envelope's fields (the same
 * bytes on the wire), `XREADGROUP`, `XACK`. Plexus: `transport.publish` and a
 * `subscribe` handler with `maxInFlight: 100` (the transport validates and
 * decodes the envelope, then XACKs). Rate = N / (first publish → last ack).
 * Latency (handler start − publish call) is measured in a second phase that
 * sends one message at a time and waits for it (the throughput phase queues
 * thousands, so its latency is mostly backlog; printed for reference).
 * Rounds alternate raw/Plexus; medians are reported; ratio = Plexus / raw
 * messages/s.
 *
 * @module
 */
import { Redis } from "ioredis";
import { connectRedisStreams } from "../transports/redis-streams/transport.ts";
import { encodeFields, fieldMap } from "../transports/redis-streams/wire.ts";
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
const N = flag("--messages", quick ? 3000 : 20_000);
const ROUNDS = flag("--rounds", quick ? 1 : 3);
const WINDOW = 100;
const url = Deno.env.get("REDIS_URL");
if (!url) {
  console.error(
    'REDIS_URL is not set (run: eval "$(deno task services)")',
  );
  Deno.exit(1);
}

const tick = () => new Promise((r) => setTimeout(r, 0));

async function raw(topic: string, n: number, window: number): Promise<RateRun> {
  const N = n;
  const stream = `bench:raw:${topic}`;
  const pub = new Redis(url!, { enableAutoPipelining: true });
  const cons = new Redis(url!, { enableAutoPipelining: true });
  await pub.xgroup("CREATE", stream, "g", "$", "MKSTREAM");
  const sentAt = new Map<string, number>();
  const lat: number[] = [];
  let acked = 0;
  let done = () => {};
  const finished = new Promise<void>((r) => (done = r));
  // The usual raw consumer: read a batch, handle and XACK each message
  // (pipelined), read the next batch once those acks are back.
  const consume = async () => {
    while (acked < N) {
      const res = await cons.xreadgroup(
        "GROUP",
        "g",
        "c",
        "COUNT",
        WINDOW,
        "BLOCK",
        100,
        "STREAMS",
        stream,
        ">",
      ) as [string, [string, string[]][]][] | null;
      const acks: Promise<unknown>[] = [];
      for (const [, entries] of res ?? []) {
        for (const [id, fields] of entries) {
          lat.push(
            performance.now() - sentAt.get(fieldMap(fields).get("id")!)!,
          );
          acks.push(cons.xack(stream, "g", id));
        }
      }
      await Promise.all(acks);
      acked += acks.length;
    }
    done();
  };
  const all = kibEnvelopes(topic, N);
  const t0 = performance.now();
  const consuming = consume();
  for (let i = 0; i < N; i += window) {
    await Promise.all(
      all.slice(i, i + window).map((e) => {
        sentAt.set(e.id, performance.now());
        return pub.xadd(
          stream,
          "MAXLEN",
          "~",
          100_000,
          "*",
          ...encodeFields(e),
        );
      }),
    );
    if (window === 1) { while (lat.length <= i) await tick(); }
  }
  await finished;
  const ms = performance.now() - t0;
  await consuming;
  await pub.del(stream);
  pub.disconnect();
  cons.disconnect();
  return rateRun(N, ms, lat);
}

async function plexus(
  topic: string,
  n: number,
  window: number,
): Promise<RateRun> {
  const pub = await connectRedisStreams({ url, prefix: "bench:plexus:" });
  const sub = await connectRedisStreams({ url, prefix: "bench:plexus:" });
  const run = await transportRun(pub, sub, topic, {
    n,
    window,
    maxInFlight: WINDOW,
  });
  await sub.close();
  await pub.redis.del(`bench:plexus:${topic}`);
  await pub.close();
  return run;
}

const PINGS = quick ? 200 : 1000;
const raws: RateRun[] = [];
const ours: RateRun[] = [];
const rawPing: RateRun[] = [];
const ourPing: RateRun[] = [];
info(`redis_streams: ${N} messages of 1 KiB, ${ROUNDS} round(s) each`);
for (let r = 0; r < ROUNDS; r++) {
  const id = crypto.randomUUID().slice(0, 8);
  raws.push(await raw(`r${r}.${id}`, N, WINDOW));
  rawPing.push(await raw(`rl${r}.${id}`, PINGS, 1));
  info(
    `  raw    ${
      JSON.stringify(
        raws.at(-1),
        (_, v) => typeof v === "number" ? round(v, 2) : v,
      )
    }`,
  );
  ours.push(await plexus(`p${r}.${id}`, N, WINDOW));
  ourPing.push(await plexus(`pl${r}.${id}`, PINGS, 1));
  info(
    `  plexus ${
      JSON.stringify(
        ours.at(-1),
        (_, v) => typeof v === "number" ? round(v, 2) : v,
      )
    }`,
  );
}
const rawPerS = median(raws.map((r) => r.perS));
const ourPerS = median(ours.map((r) => r.perS));
const p = (runs: RateRun[], k: "p50" | "p99") =>
  round(median(runs.map((r) => r[k])), 2);
info(
  `raw ioredis: ${round(rawPerS)} msg/s; one at a time p50 ${
    p(rawPing, "p50")
  } ms, p99 ${p(rawPing, "p99")} ms (backlogged p50 ${p(raws, "p50")} ms)`,
);
info(
  `plexus:      ${round(ourPerS)} msg/s; one at a time p50 ${
    p(ourPing, "p50")
  } ms, p99 ${p(ourPing, "p99")} ms (backlogged p50 ${p(ours, "p50")} ms)`,
);
console.log(JSON.stringify({
  bench: "redis_streams",
  metric: "messages_per_s",
  unit: "1/s",
  value: round(ourPerS),
  baseline: { name: "raw ioredis XADD/XREADGROUP/XACK", value: round(rawPerS) },
  ratio: round(ourPerS / rawPerS, 2),
  p50_ms: p(ourPing, "p50"),
  p99_ms: p(ourPing, "p99"),
  baseline_p50_ms: p(rawPing, "p50"),
  baseline_p99_ms: p(rawPing, "p99"),
  messages: N,
}));
