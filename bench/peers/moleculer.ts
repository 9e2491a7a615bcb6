/**
 * Plexus service calls against Moleculer's on the same machine, in the same
 * run: cross-node request/reply with `{ s: 256 B string }` params, 100 calls
 * in flight, between two processes pinned to one core each (when `taskset`
 * works).
 *
 *   deno run -A bench/peers/moleculer.ts [--quick] [--rounds R] [--seconds S]
 *
 * Moleculer 0.15 comes from npm through `scripts/peers/moleculer.sh` (cache
 * outside the repo) with the Node.js 22 it requires (also from npm) and
 * runs with its TCP transporter (static
 * urls, no UDP discovery), the JSON serializer and no params validator:
 * a `bench.echo` action returning its params, called with `broker.call`.
 * Plexus runs `bench/_services_node.ts`: mesh nodes with service brokers,
 * `bench.echo` defined with a zod schema (checked on every call), called
 * with `broker.call` (balancer pick, circuit breaker, deadline, correlation
 * and trace ids). Rounds alternate Plexus and Moleculer; value = Plexus
 * calls/s, median over rounds, baseline = Moleculer's; p50/p99 medians of
 * both, and each process's CPU µs per call (steadier than rates on a shared
 * machine).
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import {
  canPin,
  Child,
  cpuMs,
  info,
  isQuick,
  median,
  numFlag,
  round,
  spawnDeno,
} from "../_util.ts";

const quick = isQuick();
const ROUNDS = numFlag("rounds", quick ? 2 : 5);
const SECONDS = numFlag("seconds", quick ? 2 : 4);
const CONCURRENCY = 100;
const BYTES = 256;
const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));

async function install(): Promise<string> {
  const out = await new Deno.Command("bash", {
    args: [here("../../scripts/peers/moleculer.sh")],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) {
    console.error("installing Moleculer failed (scripts/peers/moleculer.sh)");
    Deno.exit(2);
  }
  return new TextDecoder().decode(out.stdout).trim();
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function spawnNode(
  name: string,
  dir: string,
  args: string[],
  core: number,
): Promise<Child> {
  const script = here("./_moleculer_node.mjs");
  const pin = await canPin();
  const node = `${dir}/node_modules/.bin/node`;
  const cmd = new Deno.Command(pin ? "taskset" : node, {
    args: pin ? ["-c", String(core), node, script, ...args] : [script, ...args],
    env: { MOLECULER_DIR: dir },
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  });
  return new Child(name, cmd.spawn());
}

const dir = await install();
const serverPort = freePort();
const mServer = await spawnNode("moleculer-server", dir, [
  "server",
  String(serverPort),
], 0);
await mServer.next();
const mClient = await spawnNode("moleculer-client", dir, [
  "client",
  String(freePort()),
  String(serverPort),
], 1);
await mClient.next();

const pServer = await spawnDeno("plexus-server", "_services_node.ts", [
  "server",
], 0);
const { url } = await pServer.next<{ url: string }>();
const pClient = await spawnDeno("plexus-client", "_services_node.ts", [
  "client",
  url,
], 1);
await pClient.next();

type Run = {
  n: number;
  ms: number;
  p50: number;
  p99: number;
  /** CPU µs per call of the client and of the server process. */
  clientUs?: number;
  serverUs?: number;
};
const sides = { plexus: pClient, moleculer: mClient };
const runs: Record<keyof typeof sides, Run[]> = { plexus: [], moleculer: [] };
const run = async (side: keyof typeof sides, ms: number) => {
  await sides[side].send({
    cmd: "run",
    mode: "services",
    ms,
    concurrency: CONCURRENCY,
    bytes: BYTES,
  });
  const server = side === "plexus" ? pServer : mServer;
  const c0 = cpuMs(sides[side].pid), s0 = cpuMs(server.pid);
  const x = await sides[side].next<Run>(ms + 60_000);
  x.clientUs = (cpuMs(sides[side].pid) - c0) * 1000 / x.n;
  x.serverUs = (cpuMs(server.pid) - s0) * 1000 / x.n;
  return x;
};
// Warm-up (JIT, connections), not counted.
await run("plexus", 1000);
await run("moleculer", 1000);
for (let r = 0; r < ROUNDS; r++) {
  const order = r % 2
    ? ["moleculer", "plexus"] as const
    : ["plexus", "moleculer"] as const;
  for (const side of order) {
    const x = await run(side, SECONDS * 1000);
    runs[side].push(x);
    info(
      `round ${r + 1} ${side}: ${round(x.n / x.ms * 1000)} calls/s, p50 ${
        round(x.p50, 2)
      } ms, p99 ${round(x.p99, 2)} ms, CPU µs/call client ${
        round(x.clientUs!, 1)
      } server ${round(x.serverUs!, 1)}`,
    );
  }
}
await Promise.all([pClient, pServer, mClient, mServer].map((c) => c.stop()));

const nodeVersion = new TextDecoder().decode(
  (await new Deno.Command(`${dir}/node_modules/.bin/node`, {
    args: ["--version"],
  }).output()).stdout,
).trim();
const rate = (rs: Run[]) => median(rs.map((x) => x.n / x.ms * 1000));
const p = (rs: Run[], k: "p50" | "p99") =>
  round(median(rs.map((x) => x[k])), 2);
const cpu = (rs: Run[], k: "clientUs" | "serverUs") =>
  round(median(rs.map((x) => x[k]!)), 1);
const ours = rate(runs.plexus);
const theirs = rate(runs.moleculer);
console.log(JSON.stringify({
  bench: "peers/moleculer",
  metric: "calls_per_s",
  unit: "1/s",
  value: round(ours),
  baseline: {
    name: `Moleculer 0.15.2 TCP transporter (node ${nodeVersion}), broker.call`,
    value: round(theirs),
  },
  ratio: round(ours / theirs, 2),
  p50_ms: p(runs.plexus, "p50"),
  p99_ms: p(runs.plexus, "p99"),
  baseline_p50_ms: p(runs.moleculer, "p50"),
  baseline_p99_ms: p(runs.moleculer, "p99"),
  cpu_us_per_call: {
    client: cpu(runs.plexus, "clientUs"),
    server: cpu(runs.plexus, "serverUs"),
    baseline_client: cpu(runs.moleculer, "clientUs"),
    baseline_server: cpu(runs.moleculer, "serverUs"),
  },
  bytes: BYTES,
  concurrency: CONCURRENCY,
  rounds: ROUNDS,
  node: nodeVersion,
}));
