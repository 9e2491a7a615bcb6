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
import { kibEnvelopes, type RateRun, rateRun, transportRun } from "./_util.ts";
import { brokerArgs, runBrokerBench, serviceUrl } from "./_broker.ts";

const { quick, messages: N, rounds: ROUNDS } = brokerArgs(20_000);
const WINDOW = 100;
const url = serviceUrl("REDIS_URL");

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

await runBrokerBench({
  bench: "redis_streams",
  rawLabel: "raw ioredis",
  baselineName: "raw ioredis XADD/XREADGROUP/XACK",
  messages: N,
  rounds: ROUNDS,
  pings: quick ? 200 : 1000,
  window: WINDOW,
  raw,
  plexus,
});
