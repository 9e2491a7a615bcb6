/**
 * Service calls across two node processes against the bare mesh round trip
 * in the same run.
 *
 *   deno run -A bench/services.ts [--quick] [--rounds R] [--seconds S]
 *
 * A server process (a mesh node whose broker defines `bench.echo`, a zod
 * `z.object({ s: z.string() })` action returning its params, and which answers the topic
 * `bench.raw` with the bare `transport.respond`) and a client process (a
 * mesh node with a broker) run pinned to one core each when `taskset`
 * works. The client keeps 100 calls in flight with `{ s: 256 B string }` for S
 * seconds, alternating rounds: `broker.call("bench.echo", …)` (balancer
 * pick, circuit breaker, deadline, trace and correlation ids, schema check
 * on the server, error envelope) and `mesh.request("server", "bench.raw",
 * …)` (the same frames and batching, nothing else). Value: calls/s, median
 * over rounds; ratio = services ÷ bare; p50/p99 latency medians too, and
 * each process's CPU µs per call (steadier than rates on a shared machine).
 *
 * @module
 */
import {
  cpuMs,
  info,
  isQuick,
  median,
  numFlag,
  round,
  spawnDeno,
} from "./_util.ts";

const quick = isQuick();
const ROUNDS = numFlag("rounds", quick ? 2 : 5);
const SECONDS = numFlag("seconds", quick ? 2 : 4);
const CONCURRENCY = 100;
const BYTES = 256;

const server = await spawnDeno("server", "_services_node.ts", ["server"], 0);
const { url } = await server.next<{ url: string }>();
const client = await spawnDeno("client", "_services_node.ts", [
  "client",
  url,
], 1);
await client.next();

type Run = {
  n: number;
  ms: number;
  p50: number;
  p99: number;
  /** CPU µs per call of the client and of the server process. */
  clientUs?: number;
  serverUs?: number;
};
const runs: Record<"services" | "raw", Run[]> = { services: [], raw: [] };
// A short warm-up of each (JIT), not counted.
for (const mode of ["services", "raw"] as const) {
  await client.send({
    cmd: "run",
    mode,
    ms: 1000,
    concurrency: CONCURRENCY,
    bytes: BYTES,
  });
  await client.next();
}
for (let r = 0; r < ROUNDS; r++) {
  for (
    const mode of r % 2
      ? ["raw", "services"] as const
      : ["services", "raw"] as const
  ) {
    await client.send({
      cmd: "run",
      mode,
      ms: SECONDS * 1000,
      concurrency: CONCURRENCY,
      bytes: BYTES,
    });
    const c0 = cpuMs(client.pid), s0 = cpuMs(server.pid);
    const run = await client.next<Run>(SECONDS * 1000 + 60_000);
    run.clientUs = (cpuMs(client.pid) - c0) * 1000 / run.n;
    run.serverUs = (cpuMs(server.pid) - s0) * 1000 / run.n;
    runs[mode].push(run);
    info(
      `round ${r + 1} ${mode}: ${round(run.n / run.ms * 1000)} calls/s, p50 ${
        round(run.p50, 2)
      } ms, p99 ${round(run.p99, 2)} ms, CPU µs/call client ${
        round(run.clientUs, 1)
      } server ${round(run.serverUs, 1)}`,
    );
  }
}
await client.stop();
await server.stop();

const rate = (rs: Run[]) => median(rs.map((x) => x.n / x.ms * 1000));
const p = (rs: Run[], k: "p50" | "p99") =>
  round(median(rs.map((x) => x[k])), 2);
const cpu = (rs: Run[], k: "clientUs" | "serverUs") =>
  round(median(rs.map((x) => x[k]!)), 1);
const ours = rate(runs.services);
const bare = rate(runs.raw);
console.log(JSON.stringify({
  bench: "services",
  metric: "calls_per_s",
  unit: "1/s",
  value: round(ours),
  baseline: {
    name: "bare mesh request/reply (transport.request)",
    value: round(bare),
  },
  ratio: round(ours / bare, 2),
  p50_ms: p(runs.services, "p50"),
  p99_ms: p(runs.services, "p99"),
  baseline_p50_ms: p(runs.raw, "p50"),
  baseline_p99_ms: p(runs.raw, "p99"),
  cpu_us_per_call: {
    client: cpu(runs.services, "clientUs"),
    server: cpu(runs.services, "serverUs"),
    baseline_client: cpu(runs.raw, "clientUs"),
    baseline_server: cpu(runs.raw, "serverUs"),
  },
  bytes: BYTES,
  concurrency: CONCURRENCY,
  rounds: ROUNDS,
}));
