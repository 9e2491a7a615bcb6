/**
 * Shared helpers for the benchmarks: spawning pinned Deno subprocesses that
 * talk JSON lines over stdin/stdout, per-process CPU accounting from
 * `/proc`, and small statistics.
 *
 * @module
 */

import { V8_FLAGS_ARG } from "../core/runtime_flags.ts";
import { fileURLToPath } from "node:url";
import { createEnvelope, type Envelope } from "../core/envelope.ts";
import type { Transport } from "../core/transport.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Absolute path of the `bench/` folder. */
export const BENCH_DIR = fileURLToPath(new URL(".", import.meta.url));

/** Writes one line to stderr (progress and details; stdout is for results). */
export function info(line: string): void {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
}

/** Median of a non-empty list. */
export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Largest relative deviation from the median, e.g. 0.04 for ±4 %. */
export function spread(values: number[]): number {
  const m = median(values);
  return m === 0 ? 0 : Math.max(...values.map((v) => Math.abs(v - m) / m));
}

/** Rounds to `digits` decimals. */
export function round(value: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** Milliseconds of CPU (user + system, all threads) `pid` has used so far. */
export function cpuMs(pid: number | "self"): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Field 2 (comm) may hold spaces; the rest follows the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime are fields 14 and 15 (1-based), in clock ticks (100 Hz).
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return NaN;
  }
}

/**
 * Per-message CPU of a broker bench: `withCpu(n, into, fn)` runs `fn`
 * (which moves `n` messages) and adds this process's and the broker's
 * (`serverPid`, NaN when unknown) CPU µs per message to `into`.
 *
 * @example Usage
 * ```ts ignore
 * const withCpu = cpuPerMessage(serverPid);
 * const cpu = { client: [] as number[], server: [] as number[] };
 * await withCpu(1000, cpu, () => run(1000));
 * ```
 */
export function cpuPerMessage(serverPid: number | undefined) {
  return async <T>(
    n: number,
    into: { client: number[]; server: number[] },
    fn: () => Promise<T>,
  ): Promise<T> => {
    const server = () => serverPid === undefined ? NaN : cpuMs(serverPid);
    const c0 = cpuMs("self"), s0 = server();
    const run = await fn();
    const c1 = cpuMs("self"), s1 = server();
    into.client.push(((c1 - c0) * 1000) / n);
    into.server.push(((s1 - s0) * 1000) / n);
    return run;
  };
}

/** Busy and total jiffies summed over all cores, from `/proc/stat`. */
export function systemCpuMs(): { busy: number; total: number } {
  try {
    const line = Deno.readTextFileSync("/proc/stat").split("\n")[0];
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest is inside user)
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = v[3] + v[4];
    return { busy: (total - idle) * 10, total: total * 10 };
  } catch {
    return { busy: NaN, total: NaN };
  }
}

let tasksetChecked: boolean | undefined;
/** Whether `taskset` can pin processes to a core here. */
export async function canPin(): Promise<boolean> {
  if (tasksetChecked !== undefined) return tasksetChecked;
  try {
    const out = await new Deno.Command("taskset", {
      args: ["-c", "0", "true"],
      stdout: "null",
      stderr: "null",
    }).output();
    tasksetChecked = out.success &&
      navigator.hardwareConcurrency >= 2;
  } catch {
    tasksetChecked = false;
  }
  return tasksetChecked;
}

/** A Deno subprocess speaking JSON lines on stdin/stdout. */
export class Child {
  readonly process: Deno.ChildProcess;
  readonly name: string;
  #lines: string[] = [];
  #waiters: ((line: string | undefined) => void)[] = [];
  #ended = false;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly status: Promise<Deno.CommandStatus>;

  constructor(name: string, process: Deno.ChildProcess) {
    this.name = name;
    this.process = process;
    this.#writer = process.stdin.getWriter();
    this.status = process.status;
    this.#pump();
  }

  /** Process id (for CPU accounting). */
  get pid(): number {
    return this.process.pid;
  }

  async #pump(): Promise<void> {
    let rest = "";
    try {
      for await (const chunk of this.process.stdout) {
        rest += decoder.decode(chunk, { stream: true });
        let nl;
        while ((nl = rest.indexOf("\n")) !== -1) {
          this.#push(rest.slice(0, nl));
          rest = rest.slice(nl + 1);
        }
      }
    } catch {
      // stream torn down on exit
    }
    if (rest) this.#push(rest);
    this.#ended = true;
    for (const w of this.#waiters.splice(0)) w(undefined);
  }

  #push(line: string): void {
    const w = this.#waiters.shift();
    if (w) w(line);
    else this.#lines.push(line);
  }

  #nextLine(): Promise<string | undefined> {
    const line = this.#lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    if (this.#ended) return Promise.resolve(undefined);
    return new Promise((r) => this.#waiters.push(r));
  }

  /**
   * Next JSON object the child printed (other lines are passed to stderr).
   * Throws if the child exits first or `timeoutMs` passes.
   */
  async next<T = Record<string, unknown>>(timeoutMs = 60_000): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${this.name}: no reply in ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      while (true) {
        const line = await Promise.race([this.#nextLine(), timeout]);
        if (line === undefined) {
          const st = await this.status;
          throw new Error(`${this.name} exited (code ${st.code}) early`);
        }
        if (line.startsWith("{")) {
          try {
            const obj = JSON.parse(line);
            if (obj && typeof obj === "object" && "error" in obj) {
              throw new Error(`${this.name}: ${obj.error}`);
            }
            return obj as T;
          } catch (err) {
            if (!(err instanceof SyntaxError)) throw err;
          }
        }
        info(`[${this.name}] ${line}`);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends one JSON command line. */
  async send(obj: unknown): Promise<void> {
    await this.#writer.write(encoder.encode(JSON.stringify(obj) + "\n"));
  }

  /** Closes stdin (the children exit on EOF) and waits, killing after 10 s. */
  async stop(): Promise<Deno.CommandStatus> {
    try {
      await this.#writer.close();
    } catch {
      // already gone
    }
    const timer = setTimeout(() => {
      try {
        this.process.kill("SIGKILL");
      } catch {
        // already gone
      }
    }, 10_000);
    const st = await this.status;
    clearTimeout(timer);
    return st;
  }
}

/**
 * Starts `deno run -A [denoFlags] bench/<script> ...args` with piped
 * stdin/stdout and inherited stderr, pinned to `core` when `taskset` works.
 */
export async function spawnDeno(
  name: string,
  script: string,
  args: string[],
  core?: number,
  denoFlags: string[] = [],
): Promise<Child> {
  // The node's runtime flags (core/runtime_flags.ts) for every process a
  // bench starts: Plexus runs as it ships, baselines beside it alike.
  const denoArgs = [
    "run",
    "-A",
    V8_FLAGS_ARG,
    ...denoFlags,
    BENCH_DIR + script,
    ...args,
  ];
  const pin = core !== undefined && await canPin();
  const cmd = new Deno.Command(pin ? "taskset" : Deno.execPath(), {
    args: pin ? ["-c", String(core), Deno.execPath(), ...denoArgs] : denoArgs,
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  });
  return new Child(name, cmd.spawn());
}

/** Resolves when stdin reaches EOF (the parent closed it or died). */
export async function stdinClosed(): Promise<void> {
  const buf = new Uint8Array(1024);
  while ((await Deno.stdin.read(buf)) !== null) {
    // drain
  }
}

/** Yields each JSON command line read from stdin, until EOF. */
export async function* commands(): AsyncGenerator<Record<string, unknown>> {
  let rest = "";
  for await (const chunk of Deno.stdin.readable) {
    rest += decoder.decode(chunk, { stream: true });
    let nl;
    while ((nl = rest.indexOf("\n")) !== -1) {
      const line = rest.slice(0, nl).trim();
      rest = rest.slice(nl + 1);
      if (line) yield JSON.parse(line);
    }
  }
}

/** Prints one JSON line on stdout (the parent's reply channel). */
export function reply(obj: unknown): void {
  Deno.stdout.writeSync(encoder.encode(JSON.stringify(obj) + "\n"));
}

/** Whether `--quick` was passed. */
export function isQuick(args = Deno.args): boolean {
  return args.includes("--quick");
}

/** Value of `--name value` or `--name=value` in `args`, if given. */
export function flag(name: string, args = Deno.args): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === `--${name}`) return args[i + 1];
    if (args[i].startsWith(`--${name}=`)) {
      return args[i].slice(name.length + 3);
    }
  }
  return undefined;
}

/** Numeric flag with a default. */
export function numFlag(name: string, dflt: number, args = Deno.args): number {
  const v = flag(name, args);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`--${name}: not a number: ${v}`);
  return n;
}

/** Which side limits a client/server measurement. */
export type Bound = "server" | "client" | "balanced";

/**
 * The side with the higher CPU cost per operation limits the rate, since
 * each side has one core to itself: server and client costs within 10 % of
 * each other are "balanced" (both at their limit). Costs per operation are
 * robust to other processes stealing CPU, unlike utilisation.
 */
export function bottleneck(serverUs: number, clientUs: number): Bound {
  const r = clientUs / serverUs;
  return r > 1.1 ? "client" : r < 0.9 ? "server" : "balanced";
}

/** A messaging run: rate and latency percentiles (ms). */
export interface RateRun {
  perS: number;
  p50: number;
  p99: number;
}

/** The value at quantile `p` (0..1) of an ascending list. */
export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

/** `n` messages in `ms`, with per-message latencies `lat` (sorted in place). */
export function rateRun(n: number, ms: number, lat: number[]): RateRun {
  lat.sort((a, b) => a - b);
  return {
    perS: n / (ms / 1000),
    p50: percentile(lat, 0.5),
    p99: percentile(lat, 0.99),
  };
}

/** `n` 1 KiB event envelopes on `topic`, for the transport benchmarks. */
export function kibEnvelopes(topic: string, n: number): Envelope[] {
  const payload = "x".repeat(1024);
  return Array.from(
    { length: n },
    () => createEnvelope({ type: "event", topic, source: "bench", payload }),
  );
}

/**
 * Publish → consume through Plexus transports: `sub` subscribes to `topic`
 * in group "g" (`maxInFlight`), `pub` publishes `n` 1 KiB envelopes in
 * windows of `window` concurrent publishes (with `window` 1, each waits for
 * its delivery: one at a time). Rate = n / (first publish → last ack);
 * latency = handler start − publish call.
 */
export async function transportRun(
  pub: Transport,
  sub: Transport,
  topic: string,
  options: { n: number; window: number; maxInFlight: number },
): Promise<RateRun> {
  const { n, window } = options;
  const sentAt = new Map<string, number>();
  const lat: number[] = [];
  let acked = 0;
  let done = () => {};
  const finished = new Promise<void>((r) => (done = r));
  await sub.subscribe(topic, async (d) => {
    lat.push(performance.now() - sentAt.get(d.envelope.id)!);
    await d.ack();
    if (++acked === n) done();
  }, { group: "g", maxInFlight: options.maxInFlight });
  const all = kibEnvelopes(topic, n);
  const t0 = performance.now();
  for (let i = 0; i < n; i += window) {
    await Promise.all(
      all.slice(i, i + window).map((e) => {
        sentAt.set(e.id, performance.now());
        return pub.publish(topic, e);
      }),
    );
    while (window === 1 && lat.length <= i) {
      await new Promise((r) => setTimeout(r, 0));
    }
  }
  await finished;
  return rateRun(n, performance.now() - t0, lat);
}
