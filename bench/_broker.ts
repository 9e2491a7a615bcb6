/**
 * The round loop and report shared by the broker transport benchmarks
 * (`kafka.ts`, `nats.ts`, `rabbitmq.ts`, `redis_streams.ts`): each round runs
 * the raw client, then Plexus, once backlogged (`window` publishes in flight)
 * and once one message at a time (the latency phase); medians over rounds
 * are reported and the JSON line of CONTRACTS.md is printed last.
 *
 * @module
 */
import {
  cpuPerMessage,
  info,
  isQuick,
  median,
  numFlag,
  type RateRun,
  round,
} from "./_util.ts";

/** One side's run: `n` messages on a fresh `topic`, `window` in flight. */
export type BrokerRun = (
  topic: string,
  n: number,
  window: number,
) => Promise<RateRun>;

/** Options for {@linkcode runBrokerBench}. */
export interface BrokerBenchOptions {
  /** The `bench` field of the JSON line. */
  bench: string;
  /** How the raw client is named in the printed lines (e.g. "raw kafkajs"). */
  rawLabel: string;
  /** The baseline's name in the JSON line. */
  baselineName: string;
  /** Messages per backlogged run. */
  messages: number;
  /** Rounds. */
  rounds: number;
  /** Messages in the one-at-a-time phase. */
  pings: number;
  /** Publishes in flight in the backlogged phase. @default {100} */
  window?: number;
  raw: BrokerRun;
  plexus: BrokerRun;
  /** The broker's pid, to report CPU per message on both sides. */
  server?: { pid: number; label: string };
  /** A topic name from a phase tag (`r0`, `rl0`, `p0`, `pl0`) and a run id. */
  topic?: (tag: string, id: string) => string;
  /** Extra fields of the JSON line. */
  extra?: Record<string, unknown>;
  /** Printed after the header line, e.g. the queue type. */
  headerNote?: string;
}

/** Reads `--quick`, `--messages N` and `--rounds R` with the benches' defaults. */
export function brokerArgs(messages: number): {
  quick: boolean;
  messages: number;
  rounds: number;
} {
  const quick = isQuick();
  return {
    quick,
    messages: numFlag("messages", quick ? 3000 : messages),
    rounds: numFlag("rounds", quick ? 1 : 3),
  };
}

/** The value of environment variable `name`, or exit 1 saying how to set it. */
export function serviceUrl(name: string): string {
  const v = Deno.env.get(name);
  if (!v) {
    console.error(`${name} is not set (run: eval "$(deno task services)")`);
    Deno.exit(1);
  }
  return v;
}

/**
 * Runs the rounds and prints the report.
 *
 * @example Usage
 * ```ts ignore
 * await runBrokerBench({
 *   bench: "kafka", rawLabel: "raw kafkajs", baselineName: "raw kafkajs …",
 *   messages: 3000, rounds: 1, pings: 100, raw, plexus,
 * });
 * ```
 */
export async function runBrokerBench(o: BrokerBenchOptions): Promise<void> {
  const window = o.window ?? 100;
  const topic = o.topic ?? ((tag, id) => `${tag}.${id}`);
  const withCpu = o.server ? cpuPerMessage(o.server.pid) : undefined;
  const rawCpu = { client: [] as number[], server: [] as number[] };
  const ourCpu = { client: [] as number[], server: [] as number[] };
  const measured = (
    cpu: typeof rawCpu,
    fn: () => Promise<RateRun>,
  ) => withCpu ? withCpu(o.messages, cpu, fn) : fn();
  const raws: RateRun[] = [], ours: RateRun[] = [];
  const rawPing: RateRun[] = [], ourPing: RateRun[] = [];
  const fmt = (r: RateRun | undefined) =>
    JSON.stringify(r, (_, v) => typeof v === "number" ? round(v, 2) : v);
  info(
    `${o.bench}: ${o.messages} messages of 1 KiB, ${o.rounds} round(s) each${
      o.headerNote ? `, ${o.headerNote}` : ""
    }`,
  );
  for (let r = 0; r < o.rounds; r++) {
    const id = crypto.randomUUID().slice(0, 8);
    raws.push(
      await measured(
        rawCpu,
        () => o.raw(topic(`r${r}`, id), o.messages, window),
      ),
    );
    rawPing.push(await o.raw(topic(`rl${r}`, id), o.pings, 1));
    info(`  raw    ${fmt(raws.at(-1))} one at a time ${fmt(rawPing.at(-1))}`);
    ours.push(
      await measured(
        ourCpu,
        () => o.plexus(topic(`p${r}`, id), o.messages, window),
      ),
    );
    ourPing.push(await o.plexus(topic(`pl${r}`, id), o.pings, 1));
    info(`  plexus ${fmt(ours.at(-1))} one at a time ${fmt(ourPing.at(-1))}`);
  }
  const rawPerS = median(raws.map((r) => r.perS));
  const ourPerS = median(ours.map((r) => r.perS));
  const p = (runs: RateRun[], k: "p50" | "p99") =>
    round(median(runs.map((r) => r[k])), 2);
  const width = Math.max(o.rawLabel.length, "plexus".length) + 1;
  for (
    const [label, perS, ping, backlog] of [
      [o.rawLabel, rawPerS, rawPing, raws],
      ["plexus", ourPerS, ourPing, ours],
    ] as const
  ) {
    info(
      `${`${label}:`.padEnd(width)} ${round(perS)} msg/s; one at a time p50 ${
        p(ping, "p50")
      } ms, p99 ${p(ping, "p99")} ms (backlogged p50 ${p(backlog, "p50")} ms)`,
    );
  }
  const us = (xs: number[]) => round(median(xs), 1);
  const cpu = o.server
    ? {
      cpu_us_per_message: {
        client: us(ourCpu.client),
        server: us(ourCpu.server),
      },
      baseline_cpu_us_per_message: {
        client: us(rawCpu.client),
        server: us(rawCpu.server),
      },
      cpu_ratio: round(
        (median(rawCpu.client) + median(rawCpu.server)) /
          (median(ourCpu.client) + median(ourCpu.server)),
        2,
      ),
    }
    : {};
  if (o.server) {
    info(
      `CPU µs per message, client / ${o.server.label}: raw ${
        us(rawCpu.client)
      } / ${us(rawCpu.server)}, plexus ${us(ourCpu.client)} / ${
        us(ourCpu.server)
      }`,
    );
  }
  console.log(JSON.stringify({
    bench: o.bench,
    metric: "messages_per_s",
    unit: "1/s",
    value: round(ourPerS),
    baseline: { name: o.baselineName, value: round(rawPerS) },
    ratio: round(ourPerS / rawPerS, 2),
    p50_ms: p(ourPing, "p50"),
    p99_ms: p(ourPing, "p99"),
    baseline_p50_ms: p(rawPing, "p50"),
    baseline_p99_ms: p(rawPing, "p99"),
    ...cpu,
    ...o.extra,
    messages: o.messages,
  }));
}

/** The pid of the services' `name` process (`$PLEXUS_RUN/{name}.pid`), when readable. */
export async function servicePid(name: string): Promise<number | undefined> {
  const dir = Deno.env.get("PLEXUS_RUN") ?? "/tmp/plexus-services";
  return await Deno.readTextFile(`${dir}/${name}.pid`).then(
    (s) => Number(s.trim()) || undefined,
    () => undefined,
  );
}
