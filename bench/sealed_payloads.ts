/**
 * Sealed payloads on Redis Streams: publish → consume messages/s of 1 KiB
 * payloads sealed end to end (HPKE-wrapped session key, one ChaCha20 key
 * stream per batch, one Ed25519 signature per batch of up to 64 messages over
 * the Merkle root of their digests; core/security/sealed_transport.ts) versus
 * the same transport without sealing, in the same run.
 *
 *   eval "$(deno task services)"
 *   deno run -A bench/sealed_payloads.ts [--quick] [--messages N] [--rounds R] [--worker]
 *     [--only plain|sealed] [--split]
 *
 * Sealing and opening run on the main thread (the transport's default);
 * `--worker` puts them on each sealed transport's worker (`worker: true`).
 * `--split` runs node `b` (the consumer) in a process of its own
 * (`_sealed_consumer.ts`, keys in a shared KV file), as two nodes would:
 * each process then seals or opens, not both, and the JSON adds the
 * consumer's main-thread CPU per message.
 *
 * Both sides as in bench/redis_streams.ts (`transportRun`): a producer
 * publishes N envelopes in windows of 100 concurrent publishes; one
 * subscription in group "g" with `maxInFlight` 100 acks each. Sealed: the
 * producer is node `a`, the consumer node `b`, the topic sealed to [b]
 * (one recipient, as a work queue is); each message is encrypted and signed
 * (in its batch) by `a` and verified and opened by `b`, in this one process.
 * The publishing and consuming concurrency is the same on both sides (the
 * same `transportRun`). Rounds alternate plain/sealed; medians; ratio =
 * sealed / plain messages/s; CPU is this process's (all threads), its
 * main thread's (the one that bounds the rate) and its Worker threads'
 * (the sealed transports' workers: core/security/sealed_offload.ts), per
 * message; the JSON line
 * carries `/proc/loadavg` before and after, as the machine is shared.
 *
 * @module
 */
import { connectRedisStreams } from "../transports/redis-streams/transport.ts";
import type { Transport } from "../core/transport.ts";
import {
  sealedTransport,
  type SealingKeys,
  type SealingPolicy,
} from "../core/security/sealed_transport.ts";
import {
  freshSealingKeys,
  kvSealingDirectory,
} from "../core/security/sealing_keys.ts";
import {
  cpuMs,
  flag,
  info,
  isQuick,
  kibEnvelopes,
  median,
  numFlag,
  type RateRun,
  rateRun,
  round,
  spawnDeno,
  transportRun,
} from "./_util.ts";
import { join } from "node:path";
import { mainThreadCpuMs, SEALED_POLICY } from "./_sealed_shared.ts";

const quick = isQuick();
const N = numFlag("messages", quick ? 3000 : 20_000);
const ROUNDS = numFlag("rounds", quick ? 1 : 3);
const WINDOW = 100;
const WORKER = Deno.args.includes("--worker");
/** `--only plain|sealed`: one side alone, for a profile (`--cpu-prof`); no ratio then. */
const ONLY = flag("only");
const url = Deno.env.get("REDIS_URL");
if (!url) {
  console.error('REDIS_URL is not set (run: eval "$(deno task services)")');
  Deno.exit(1);
}

const SPLIT = Deno.args.includes("--split");
// Split: the receiving node's process opens the shared KV file too (its
// keys go into the same directory).
const kvDir = SPLIT
  ? await Deno.makeTempDir({ prefix: "plexus-bench-sealed-" })
  : undefined;
const kv = await Deno.openKv(kvDir ? join(kvDir, "kv") : ":memory:");
const directory = kvSealingDirectory(kv);
async function keysOf(id: string): Promise<SealingKeys> {
  return await freshSealingKeys(id, directory);
}
const a = await keysOf("node:a");
const b = SPLIT ? undefined : await keysOf("node:b");
const consumer = kvDir
  ? await spawnDeno("node b", "_sealed_consumer.ts", [
    "--kv",
    join(kvDir, "kv"),
  ])
  : undefined;
if (consumer) await consumer.next();
const policy: SealingPolicy = SEALED_POLICY;

/** CPU the consumer process spent in the last split run (ms). */
let consumerCpu = { cpuMs: 0, mainMs: 0 };

async function run(
  topic: string,
  sealed: boolean,
  beforeClose = () => {},
): Promise<RateRun> {
  const prefix = "bench:sealed:";
  if (consumer) return await runSplit(topic, sealed, prefix);
  const rawPub = await connectRedisStreams({ url, prefix });
  const rawSub = await connectRedisStreams({ url, prefix });
  const options = { worker: WORKER };
  const pub: Transport = sealed
    ? sealedTransport(rawPub, policy, a, options)
    : rawPub;
  const sub: Transport = sealed
    ? sealedTransport(rawSub, policy, b!, options)
    : rawSub;
  const result = await transportRun(pub, sub, topic, {
    n: N,
    window: WINDOW,
    maxInFlight: WINDOW,
  });
  beforeClose();
  await sub.close();
  await rawPub.redis.del(`${prefix}${topic}`);
  await pub.close();
  return result;
}

/**
 * Node `a` here publishes, node `b` in its own process consumes (as two
 * nodes would): the rate is `n` over first publish → `b`'s last ack, read
 * when `b` reports it (a pipe's latency late).
 */
async function runSplit(
  topic: string,
  sealed: boolean,
  prefix: string,
): Promise<RateRun> {
  const raw = await connectRedisStreams({ url, prefix });
  const pub: Transport = sealed ? sealedTransport(raw, policy, a) : raw;
  await consumer!.send({ topic, sealed, n: N, maxInFlight: WINDOW });
  await consumer!.next();
  const all = kibEnvelopes(topic, N);
  const t0 = performance.now();
  for (let i = 0; i < N; i += WINDOW) {
    await Promise.all(
      all.slice(i, i + WINDOW).map((e) => pub.publish(topic, e)),
    );
  }
  consumerCpu = await consumer!.next<typeof consumerCpu>(120_000);
  const ms = performance.now() - t0;
  await raw.redis.del(`${prefix}${topic}`);
  await pub.close();
  return rateRun(N, ms, []);
}

/** CPU ms of this process's Worker threads (named `worker-N`). */
function workerThreadsCpuMs(): number {
  let ms = 0;
  for (const task of Deno.readDirSync("/proc/self/task")) {
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/self/task/${task.name}/stat`);
    } catch {
      continue; // a thread that ended
    }
    const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    if (!name.startsWith("worker-")) continue;
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    ms += (Number(fields[11]) + Number(fields[12])) * 10;
  }
  return ms;
}
const loadavg = () => Deno.readTextFileSync("/proc/loadavg").trim();
const loadBefore = loadavg();

const plains: RateRun[] = [];
const seals: RateRun[] = [];
const cpu = { plain: [] as number[], sealed: [] as number[] };
const main = { plain: [] as number[], sealed: [] as number[] };
const workers: number[] = [];
/** Split: the consumer process's main thread, per message. */
const consumerMain = { plain: [] as number[], sealed: [] as number[] };
const cpuNow = () => cpuMs("self");
info(`sealed_payloads: ${N} messages of 1 KiB on Redis, ${ROUNDS} round(s)`);
for (let r = 0; r < ROUNDS; r++) {
  const id = crypto.randomUUID().slice(0, 8);
  let c0 = cpuNow(), m0 = mainThreadCpuMs();
  if (ONLY === "sealed") plains.push({ perS: NaN } as RateRun);
  else plains.push(await run(`plain.${r}.${id}`, false));
  cpu.plain.push((cpuNow() - c0 + consumerCpu.cpuMs) / N);
  main.plain.push((mainThreadCpuMs() - m0) / N);
  consumerMain.plain.push(consumerCpu.mainMs / N);
  consumerCpu = { cpuMs: 0, mainMs: 0 };
  c0 = cpuNow();
  m0 = mainThreadCpuMs();
  // The workers of the run's transports end with it: counted before then.
  const w0 = workerThreadsCpuMs();
  seals.push(
    ONLY === "plain"
      ? { perS: NaN } as RateRun
      : await run(`sealed.${r}.${id}`, true, () => {
        workers.push((workerThreadsCpuMs() - w0) / N);
      }),
  );
  cpu.sealed.push((cpuNow() - c0 + consumerCpu.cpuMs) / N);
  main.sealed.push((mainThreadCpuMs() - m0) / N);
  consumerMain.sealed.push(consumerCpu.mainMs / N);
  consumerCpu = { cpuMs: 0, mainMs: 0 };
  info(
    `  round ${r + 1}: plain ${round(plains.at(-1)!.perS)} msg/s, sealed ${
      round(seals.at(-1)!.perS)
    } msg/s`,
  );
}
kv.close();
if (consumer) {
  await consumer.stop();
  await Deno.remove(kvDir!, { recursive: true });
}
const plainPerS = median(plains.map((r) => r.perS));
const sealedPerS = median(seals.map((r) => r.perS));
const cpuPlain = median(cpu.plain);
const cpuSealed = median(cpu.sealed);
const mainPlain = median(main.plain);
const mainSealed = median(main.sealed);
info(
  `plain ${round(plainPerS)} msg/s, sealed ${round(sealedPerS)} msg/s; ` +
    `process CPU per message ${round(cpuPlain * 1000, 1)} µs plain, ${
      round(cpuSealed * 1000, 1)
    } µs sealed (main thread ${round(mainPlain * 1000, 1)}, ${
      round(mainSealed * 1000, 1)
    } µs; sealed workers ${round(median(workers) * 1000, 1)} µs)`,
);
console.log(JSON.stringify({
  bench: "sealed_payloads",
  metric: "messages_per_s",
  unit: "1/s",
  value: round(sealedPerS),
  baseline: {
    name: "the same Redis Streams transport, unsealed",
    value: round(plainPerS),
  },
  ratio: round(sealedPerS / plainPerS, 2),
  details: {
    messages: N,
    rounds: ROUNDS,
    payloadBytes: 1024,
    sealedOnWorker: WORKER,
    split: SPLIT,
    ...(SPLIT
      ? {
        consumer_main_thread_cpu_us_per_message: {
          plain: round(median(consumerMain.plain) * 1000, 1),
          sealed: round(median(consumerMain.sealed) * 1000, 1),
        },
      }
      : {}),
    recipients: 1,
    cpu_us_per_message: {
      plain: round(cpuPlain * 1000, 1),
      sealed: round(cpuSealed * 1000, 1),
    },
    cpu_ratio: round(cpuPlain / cpuSealed, 2),
    main_thread_cpu_us_per_message: {
      plain: round(mainPlain * 1000, 1),
      sealed: round(mainSealed * 1000, 1),
    },
    sealed_worker_threads_cpu_us_per_message: round(median(workers) * 1000, 1),
    loadavg: { before: loadBefore, after: loadavg() },
  },
  notes: SPLIT
    ? "sender and receiver in two processes (--split); target ≥ 0.6"
    : "sender and receiver in one process; target ≥ 0.6",
}));
