/**
 * What a plugin's sandbox costs: the same plugin (`_isolation_plugin.ts`)
 * run `trusted` (in the node's process), `worker` (its own Worker, every
 * call across a message port) and `process` (a child `deno run`, every call
 * through a pipe), alternating rounds.
 *
 *   deno run -A bench/plugin_isolation.ts [--quick] [--rounds 6]
 *     [--seconds 1] [--concurrency 32]
 *
 * - route over HTTP (the headline, what clients see): `GET
 *   /plugins/isolated/ping` served on loopback by `Deno.serve` with the
 *   node's app, loaded by `bench/_load.ts` in its own process (raw HTTP/1.1,
 *   `concurrency` keep-alive connections, pinned to core 1 when `taskset`
 *   works); requests/s, worker / trusted.
 * - route in process: the same request straight into the node's handler
 *   (no sockets), `concurrency` in flight, for `seconds`: the boundary's
 *   cost with nothing around it to hide it.
 * - router: `router.request("bench.echo")` answered by the plugin's
 *   subscription (the reply crosses back as a publish); round trips/s. The
 *   sandboxes run with their message budget lifted: each reply is a note,
 *   and the default 20,000 notes a second would drop replies (their
 *   requests then time out) rather than measure the boundary.
 * - cold start: load and set up the plugin, ms (trusted: import + setup;
 *   worker: a new Worker, load, setup).
 * - swap: a hot swap as `POST /api/v1/plugins/{name}/reload` does it
 *   (`kernel.replace`): load a new copy at the same level, set it up beside
 *   the old one, switch, let the old one drain and stop it; ms.
 *
 * Each of `trusted`, `worker` and `process` (a child `deno run`) is measured
 * per round, in an order that alternates between rounds.
 *
 * @module
 */
import { createTestKernel, type TestKernel } from "../core/testing.ts";
import {
  openWorkerSandbox,
  type WorkerSandbox,
} from "../core/sandbox/worker_host.ts";
import {
  denoFlags,
  effectivePermissions,
  workerPermissions,
} from "../core/sandbox/permissions.ts";
import { processLauncher } from "../core/sandbox/process_host.ts";
import {
  info,
  isQuick,
  median,
  numFlag,
  round,
  spawnDeno,
  spread,
} from "./_util.ts";

const quick = isQuick();
const ROUNDS = numFlag("rounds", quick ? 3 : 6);
const SECONDS = numFlag("seconds", quick ? 0.5 : 1);
const CONCURRENCY = numFlag("concurrency", 32);
const PLUGIN = new URL("./_isolation_plugin.ts", import.meta.url).href;
const NONE = effectivePermissions(undefined, {});
const PERMISSIONS = workerPermissions(NONE, PLUGIN);

type Level = "trusted" | "worker" | "process";
const LEVELS: Level[] = ["trusted", "worker", "process"];

/** Loads a copy of the plugin at `level`: its default export, or its sandbox's stand-in. */
async function loadCopy(
  level: Level,
): Promise<{ plugin: unknown; sandbox?: WorkerSandbox }> {
  if (level === "trusted") {
    const plugin = (await import(`${PLUGIN}?fresh=${crypto.randomUUID()}`))
      .default;
    return { plugin };
  }
  const sandbox = await openWorkerSandbox(PLUGIN, {
    permissions: PERMISSIONS,
    // The router echo sends one note per round trip (the reply's publish):
    // past the default budget of 20,000 a second, replies would be dropped
    // and their requests time out. This measures the boundary, not the cap.
    messagesPerSecond: Infinity,
    launcher: level === "process"
      ? processLauncher({ flags: denoFlags(NONE, PLUGIN) })
      : undefined,
  });
  return { plugin: sandbox.plugin, sandbox };
}

async function start(level: Level): Promise<{
  t: TestKernel;
  sandbox?: WorkerSandbox;
  ms: number;
}> {
  const t0 = performance.now();
  const { plugin, sandbox } = await loadCopy(level);
  const t = await createTestKernel([plugin]);
  return { t, sandbox, ms: performance.now() - t0 };
}

/**
 * Hot swap (kernel.replace, as POST /api/v1/plugins/{name}/reload does it):
 * load a new copy at the same level, start it, switch, retire the old one;
 * ms from the start of the load to the old copy stopped.
 */
async function swap(
  t: TestKernel,
  level: Level,
  old?: WorkerSandbox,
): Promise<{ ms: number; sandbox?: WorkerSandbox }> {
  const t0 = performance.now();
  const next = await loadCopy(level);
  const report = await t.kernel.replace(next.plugin);
  old?.terminate("replaced");
  const ms = performance.now() - t0;
  if (!report.drained) throw new Error(`${level}: the old copy did not drain`);
  return { ms, sandbox: next.sandbox };
}

/** Calls `op` with `CONCURRENCY` in flight for `SECONDS`; completions/s. */
async function rate(op: () => Promise<void>): Promise<number> {
  const end = performance.now() + SECONDS * 1000;
  let done = 0;
  const loop = async () => {
    while (performance.now() < end) {
      await op();
      done++;
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, loop));
  return done / ((performance.now() - t0) / 1000);
}

const route = (t: TestKernel) => async () => {
  const res = await t.request("/plugins/isolated/ping");
  if (res.status !== 200) throw new Error(`route answered ${res.status}`);
  await res.arrayBuffer();
};
const echo = (t: TestKernel) => async () => {
  await t.router.request("bench.echo", 1, { timeoutMs: 5000 });
};

/**
 * Requests/s of `GET /plugins/isolated/ping` over loopback HTTP, and the
 * CPU this process (every thread: the node's, a Worker's, V8's helpers)
 * spent per request meanwhile, µs. A process sandbox's child is not in it.
 */
async function overHttp(
  t: TestKernel,
): Promise<{ rps: number; cpuUs: number }> {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    t.app.fetch,
  );
  try {
    const gen = await spawnDeno("load", "_load.ts", [
      "--url",
      `http://127.0.0.1:${server.addr.port}/plugins/isolated/ping`,
      "--connections",
      String(CONCURRENCY),
      "--duration",
      String(SECONDS * 1000),
      "--warmup",
      "300",
      "--server-pid",
      String(Deno.pid),
    ], 1);
    try {
      const r = await gen.next<
        { rps: number; failures: number; serverCpu: number }
      >(SECONDS * 1000 + 30_000);
      if (r.failures > 0) throw new Error(`${r.failures} failed requests`);
      return { rps: r.rps, cpuUs: r.serverCpu / r.rps * 1e6 };
    } finally {
      await gen.stop();
    }
  } finally {
    await server.shutdown();
  }
}

type Series = {
  http: number[];
  cpu: number[];
  route: number[];
  router: number[];
  cold: number[];
  swap: number[];
};
const series = (): Series => ({
  http: [],
  cpu: [],
  route: [],
  router: [],
  cold: [],
  swap: [],
});
const results: Record<Level, Series> = {
  trusted: series(),
  worker: series(),
  process: series(),
};
for (let r = 1; r <= ROUNDS; r++) {
  // Alternate which level goes first, so drift in the machine's load
  // falls on both.
  const order: Level[] = r % 2 ? LEVELS : [...LEVELS].reverse();
  for (const level of order) {
    const { t, ms, sandbox } = await start(level);
    let current = sandbox;
    try {
      await rate(route(t)); // warm-up, not counted
      results[level].cold.push(ms);
      const http = await overHttp(t);
      results[level].http.push(http.rps);
      results[level].cpu.push(http.cpuUs);
      results[level].route.push(await rate(route(t)));
      results[level].router.push(await rate(echo(t)));
      const swapped = await swap(t, level, current);
      current = swapped.sandbox;
      results[level].swap.push(swapped.ms);
      // The new copy serves.
      await route(t)();
    } finally {
      await t.close();
      current?.terminate("bench round over");
    }
    const last = (k: keyof Series) => round(results[level][k].at(-1)!);
    info(
      `round ${r} ${level}: http ${last("http")}/s (${
        last("cpu")
      } µs CPU each), route ${last("route")}/s, router ${
        last("router")
      }/s, cold start ${round(ms, 1)} ms, swap ${
        round(results[level].swap.at(-1)!, 1)
      } ms`,
    );
  }
}

const m = (level: Level, k: keyof Series) => median(results[level][k]);
const httpRatio = m("worker", "http") / m("trusted", "http");
console.log(JSON.stringify({
  bench: "plugin_isolation",
  metric: "worker_route_requests_per_s_http",
  unit: "1/s",
  value: round(m("worker", "http")),
  baseline: {
    name: "the same plugin trusted (in-process), same run, same HTTP load",
    value: round(m("trusted", "http")),
  },
  ratio: round(httpRatio, 3),
  details: {
    rounds: ROUNDS,
    seconds: SECONDS,
    concurrency: CONCURRENCY,
    http: {
      trusted: round(m("trusted", "http")),
      worker: round(m("worker", "http")),
      process: round(m("process", "http")),
      processRatio: round(m("process", "http") / m("trusted", "http"), 3),
      spread: {
        trusted: round(spread(results.trusted.http), 3),
        worker: round(spread(results.worker.http), 3),
      },
      // This process's CPU per request (all its threads; a process
      // sandbox's child is not counted, so it is left out): steadier than
      // requests/s when the machine is shared.
      cpuUsPerRequest: {
        trusted: round(m("trusted", "cpu"), 1),
        worker: round(m("worker", "cpu"), 1),
        ratio: round(m("trusted", "cpu") / m("worker", "cpu"), 3),
      },
    },
    route: {
      trusted: round(m("trusted", "route")),
      worker: round(m("worker", "route")),
      process: round(m("process", "route")),
      ratio: round(m("worker", "route") / m("trusted", "route"), 3),
      spread: {
        trusted: round(spread(results.trusted.route), 3),
        worker: round(spread(results.worker.route), 3),
      },
    },
    router: {
      trusted: round(m("trusted", "router")),
      worker: round(m("worker", "router")),
      process: round(m("process", "router")),
      ratio: round(m("worker", "router") / m("trusted", "router"), 3),
    },
    coldStartMs: {
      trusted: round(m("trusted", "cold"), 1),
      worker: round(m("worker", "cold"), 1),
      process: round(m("process", "cold"), 1),
    },
    swapMs: {
      trusted: round(m("trusted", "swap"), 1),
      worker: round(m("worker", "swap"), 1),
      process: round(m("process", "swap"), 1),
    },
  },
  notes:
    "target: worker >= 0.5 of trusted on the route over HTTP (issue 16); on a shared machine cpuUsPerRequest.ratio is the steadier figure; swapMs: a hot swap (kernel.replace) from loading the new copy to the old one stopped",
}));
