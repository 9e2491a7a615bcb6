/**
 * The prompt layer's overhead: prompt round trips/s through one root agent
 * (`POST /send/prompt`, SAGE off and on) versus the gateway's bare sealed
 * request to the same agent behind the same HTTP chain, and cache hits/s
 * versus `GET /health`, all in the same run.
 *
 *   deno run -A bench/prompts.ts [--quick] [--rounds N] [--ms MS] [--concurrency C]
 *     [--cases cache_hit,health]   (only these cases, e.g. to profile one path)
 *
 * One node (`startNode`, KV file, rate limits off, log level warn) with
 * `builtin:prompts` and a bench plugin whose `POST /api/v1/benchbare` (same
 * `prompt:send` permission, same JWT, same per-IP/audit/auth chain) sends
 * the body straight to the root agent with `gateway.request` and returns
 * its answer: the bare sealed request; its `POST /api/v1/benchbare/const`
 * reads the JSON body and answers a constant (the floor of an authenticated,
 * audited API POST on this runtime; marked unchanged like a cache hit, and
 * `/const-waited` the same answered once its audit record is durable); and a bare `Deno.serve` in the same
 * process answers the same POST with a constant (`raw_post`: no app, auth
 * or audit, the runtime's own floor for that request); `health_app` is
 * `GET /health` with an `Origin` header, which the whole app answers instead
 * of the cached-answer path. One SDK root agent answers at once
 * (SAGE: signs its hop). Clients are `fetch` loops, `C` at a time, in the
 * same process as node and agent (one event loop for all: the ratios
 * compare like with like). A prompt round trip uses a new prompt each time
 * with `Cache-Control: no-cache`, so the agent is asked every time (and the
 * SAGE-off answer is still stored, as in production). Cache hits ask one
 * stored prompt again and again. Rounds alternate the cases; values are
 * medians. `cpu_us_per_request` is this process's CPU (all threads: node,
 * agent and clients) per request of each case, steadier than the rates when
 * others share the machine; `main_us_per_request` is its main thread's alone
 * (the one event loop every case runs on, which bounds the rates: work a
 * Deno op does on another thread counts in the first, not here);
 * `latency_ms` is each case's p50 and p99 round trip with `C` in flight.
 *
 * @module
 */
import { join } from "node:path";
import { loadConfig } from "../core/config.ts";
import { startNode } from "../core/node.ts";
import { definePlugin, markUnchanged } from "../core/plugin.ts";
import { BUILTINS } from "../builtins.ts";
import type { AgentGateway } from "../gateway/gateway.ts";
import { AgentClient, generateAgentKey } from "../sdk/mod.ts";
import { servePrompts } from "../sdk/prompt_agent.ts";
import {
  cpuMs,
  flag,
  info,
  isQuick,
  median,
  numFlag,
  round,
  spread,
} from "./_util.ts";

const quick = isQuick();
const rounds = numFlag("rounds", quick ? 2 : 4);
const ms = numFlag("ms", quick ? 600 : 1500);
const concurrency = numFlag("concurrency", 16);

/** What the floor route answers: about a cache hit's size. */
const FLOOR_ANSWER = { response: "ok", metadata: { cached: true }, logs: [] };

const bare = definePlugin({
  manifest: {
    name: "benchbare",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:benchbare"],
    requires: ["gateway:agents"],
  },
  setup(ctx) {
    const gateway = ctx.kernel.get<AgentGateway>("gateway:agents");
    const routes = ctx.api("benchbare");
    routes.post("/", "prompt:send", async (c) => {
      const body = await c.req.json() as { prompt: string };
      const [agent] = gateway.capabilities().prompt ?? [];
      const answer = await gateway.request(agent, "tasks.prompt", {
        requestId: crypto.randomUUID(),
        hop: 0,
        prompt: body.prompt,
        sage: false,
      });
      return c.json(answer);
    });
    // The floor of an authenticated, audited API POST: the same chain
    // (audit waited for, JWT, permission), a JSON body read, a constant answer.
    routes.post("/const", "prompt:send", async (c) => {
      await c.req.json();
      // Changes nothing, as a cache hit: its audit record is not waited for.
      markUnchanged(c.req.raw);
      return c.json(FLOOR_ANSWER);
    });
    // The same, answered only once its audit record is durable (as every
    // call that changes something).
    routes.post("/const-waited", "prompt:send", async (c) => {
      await c.req.json();
      return c.json(FLOOR_ANSWER);
    });
    return Promise.resolve({ stop: () => Promise.resolve() });
  },
});

const dir = await Deno.makeTempDir({ prefix: "plexus-bench-prompts-" });
const file = join(dir, "config.json");
await Deno.writeTextFile(
  file,
  JSON.stringify({
    rateLimit: { enabled: false },
    pluginConfig: {
      prompts: { maxConcurrent: 1024, maxQueued: 1024, anonymous: true },
    },
  }),
);
const parsed = loadConfig([
  "--port=0",
  `--kv=${join(dir, "kv")}`,
  `--data-dir=${dir}`,
  `--plugins-dir=${join(dir, "none")}`,
  "--plugin=builtin:prompts",
  "--plugin=builtin:benchbare",
  `--config=${file}`,
  "--log-level=warn",
], { env: {} });
if (parsed.help) throw new Error("unreachable");
const node = await startNode(parsed.config, {
  sinks: [],
  builtins: { ...BUILTINS, benchbare: () => Promise.resolve(bare) },
});
const token = await node.security.jwt.issue("bench", "analyst");

// The root agent: enrolled over HTTP, answers at once.
const key = await generateAgentKey();
const operator = await node.security.jwt.issue("bench-ops", "operator");
const enrol = await fetch(`${node.url}/api/v1/agents`, {
  method: "POST",
  headers: {
    authorization: `Bearer ${operator}`,
    "content-type": "application/json",
  },
  body: JSON.stringify({
    agentId: key.id,
    publicKey: key.publicKey,
    roles: ["worker"],
  }),
});
if (enrol.status !== 201) throw new Error(`enrol: ${await enrol.text()}`);
const seed = Uint8Array.fromBase64(key.privateKey, { alphabet: "base64url" });
const agent = new AgentClient({ url: node.url, id: key.id, privateKey: seed });
const connected = agent.connect();
await servePrompts(agent, "prompt", (hop) => `ok ${hop.prompt}`, {
  key: seed,
});
await connected;

// The runtime's floor for a POST of this shape: a bare Deno.serve in this
// process reading the JSON body and answering a constant, no app at all.
const rawServer = Deno.serve(
  { port: 0, hostname: "127.0.0.1", onListen: () => {} },
  async (req) => {
    await req.json();
    return Response.json(FLOOR_ANSWER);
  },
);
const rawUrl = `http://127.0.0.1:${rawServer.addr.port}`;

type Case =
  | "prompt"
  | "prompt_sage"
  | "bare"
  | "cache_hit"
  | "cache_hit_anonymous"
  | "floor"
  | "floor_waited"
  | "raw_post"
  | "health_app"
  | "health";
const headers = {
  authorization: `Bearer ${token}`,
  "content-type": "application/json",
};
let seq = 0;
const request = (c: Case): Promise<Response> => {
  switch (c) {
    case "prompt":
      return fetch(`${node.url}/send/prompt`, {
        method: "POST",
        headers: { ...headers, "cache-control": "no-cache" },
        body: JSON.stringify({ prompt: `p${seq++}`, sageEnabled: false }),
      });
    case "prompt_sage":
      return fetch(`${node.url}/send/prompt`, {
        method: "POST",
        headers,
        body: JSON.stringify({ prompt: `p${seq++}`, sageEnabled: true }),
      });
    case "bare":
      return fetch(`${node.url}/api/v1/benchbare`, {
        method: "POST",
        headers,
        body: JSON.stringify({ prompt: `p${seq++}` }),
      });
    case "cache_hit":
      return fetch(`${node.url}/send/prompt`, {
        method: "POST",
        headers,
        body: '{"prompt":"the cached one","sageEnabled":false}',
      });
    case "cache_hit_anonymous":
      return fetch(`${node.url}/plugins/prompts/send`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: '{"prompt":"the cached one","sageEnabled":false}',
      });
    case "floor":
      return fetch(`${node.url}/api/v1/benchbare/const`, {
        method: "POST",
        headers,
        body: '{"prompt":"the cached one","sageEnabled":false}',
      });
    case "floor_waited":
      return fetch(`${node.url}/api/v1/benchbare/const-waited`, {
        method: "POST",
        headers,
        body: '{"prompt":"the cached one","sageEnabled":false}',
      });
    case "raw_post":
      return fetch(`${rawUrl}/`, {
        method: "POST",
        headers,
        body: '{"prompt":"the cached one","sageEnabled":false}',
      });
    case "health":
      return fetch(`${node.url}/health`);
    case "health_app":
      // An Origin header skips the cached-answer path: the whole app answers.
      return fetch(`${node.url}/health`, {
        headers: { origin: "http://bench.invalid" },
      });
  }
};

/** This process's CPU µs per request of each case, one value per round. */
const cpu = new Map<Case, number[]>();
/** The same for the main thread alone. */
const mainCpu = new Map<Case, number[]>();
/** Each case's round-trip times (ms), the measured rounds' only. */
const latencies = new Map<Case, number[]>();

/** CPU ms of this process's main thread (ns from schedstat; NaN without it). */
function mainThreadMs(): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/self/task/${Deno.pid}/schedstat`);
    return Number(stat.slice(0, stat.indexOf(" "))) / 1e6;
  } catch {
    return NaN;
  }
}
/** Requests made of each case, warm-up included (to divide a CPU profile by). */
const made = new Map<Case, number>();

/** Requests/s of `c` over `ms` with `concurrency` loops; throws on a bad answer. */
async function run(c: Case): Promise<number> {
  const end = performance.now() + ms;
  let done = 0;
  if (!latencies.has(c)) latencies.set(c, []);
  const times = latencies.get(c)!;
  const cpu0 = cpuMs("self"), main0 = mainThreadMs();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) {
      const sent = performance.now();
      const res = await request(c);
      if (res.status !== 200) {
        throw new Error(`${c}: ${res.status} ${await res.text()}`);
      }
      if (c.startsWith("cache_hit") && res.headers.get("x-cache") !== "HIT") {
        throw new Error(`cache_hit: X-Cache ${res.headers.get("x-cache")}`);
      }
      await res.body?.cancel();
      times.push(performance.now() - sent);
      done++;
    }
  }));
  const rate = done / ((performance.now() - t0) / 1000);
  made.set(c, (made.get(c) ?? 0) + done);
  if (!cpu.has(c)) cpu.set(c, []);
  cpu.get(c)!.push((cpuMs("self") - cpu0) * 1000 / done);
  if (!mainCpu.has(c)) mainCpu.set(c, []);
  mainCpu.get(c)!.push((mainThreadMs() - main0) * 1000 / done);
  return rate;
}

// Warm up every path, and store the cached answer.
const warm = await request("cache_hit");
await warm.body?.cancel();
const ALL_CASES: Case[] = [
  "bare",
  "prompt",
  "prompt_sage",
  "health",
  "cache_hit",
  "cache_hit_anonymous",
  "floor",
  "floor_waited",
  "raw_post",
  "health_app",
];
const only = flag("cases")?.split(",");
const unknown = only?.filter((c) => !ALL_CASES.includes(c as Case));
if (unknown?.length) {
  throw new Error(
    `--cases: unknown ${unknown.join(", ")} (known: ${ALL_CASES.join(", ")})`,
  );
}
const cases = only ? ALL_CASES.filter((c) => only.includes(c)) : ALL_CASES;
for (const c of cases) await run(c);
cpu.clear();
mainCpu.clear();
latencies.clear();

const rates = Object.fromEntries(
  cases.map((c) => [c, [] as number[]]),
) as Record<
  Case,
  number[]
>;
for (let r = 0; r < rounds; r++) {
  for (const c of r % 2 ? [...cases].reverse() : cases) {
    rates[c].push(await run(c));
  }
  info(
    `round ${r + 1}/${rounds}: ${
      cases.map((c) => `${c} ${round(rates[c].at(-1)!)}/s`).join(", ")
    }`,
  );
}
const m = Object.fromEntries(cases.map((c) => [c, median(rates[c])])) as Record<
  Case,
  number
>;

/** The `q` quantile (0-1) of `c`'s round-trip times, ms. */
function quantile(c: Case, q: number): number {
  const s = latencies.get(c)!.sort((a, b) => a - b);
  return round(s[Math.min(s.length - 1, Math.floor(q * s.length))], 2);
}

/** CPU per request of `base` ÷ that of `c` (in `of`), when both ran. */
function cpuRatio(base: Case, c: Case, of = cpu): number | null {
  const b = of.get(base), x = of.get(c);
  return b && x ? round(median(b) / median(x), 2) : null;
}

await agent.close();
await rawServer.shutdown();
await node.shutdown();
await Deno.remove(dir, { recursive: true }).catch(() => {});

console.log(JSON.stringify({
  bench: "prompts",
  metric: "prompt_round_trips_per_s",
  unit: "1/s",
  value: round(m.prompt),
  baseline: {
    name: "bare sealed gateway request to the same agent, same HTTP chain",
    value: round(m.bare),
  },
  ratio: round(m.prompt / m.bare, 2),
  details: {
    prompt_sage_per_s: round(m.prompt_sage),
    sage_ratio: round(m.prompt_sage / m.bare, 2),
    cache_hits_per_s: round(m.cache_hit),
    health_per_s: round(m.health),
    cache_ratio: round(m.cache_hit / m.health, 2),
    cache_hits_anonymous_per_s: round(m.cache_hit_anonymous),
    cache_anonymous_ratio: round(m.cache_hit_anonymous / m.health, 2),
    // An authenticated, audited POST answering a constant: the floor of any
    // /api/v1 POST here, and a hit against it.
    floor_per_s: round(m.floor),
    floor_ratio: round(m.floor / m.health, 2),
    cache_to_floor_ratio: round(m.cache_hit / m.floor, 2),
    // The same floor answered only once its audit record is durable.
    floor_waited_per_s: round(m.floor_waited),
    floor_waited_ratio: round(m.floor_waited / m.health, 2),
    // The same POST to a bare Deno.serve (no app, auth or audit): the most
    // any POST of this shape can reach here.
    raw_post_per_s: round(m.raw_post),
    raw_post_ratio: round(m.raw_post / m.health, 2),
    // GET /health answered by the whole app (middleware, router, handler)
    // rather than its cached-answer path: what the app adds to any request.
    health_app_per_s: round(m.health_app),
    health_app_ratio: round(m.health_app / m.health, 2),
    // The same ratios from CPU per request (baseline's ÷ the case's): what
    // the rates would be if every case were CPU-bound on one core.
    ratio_by_cpu: cpuRatio("bare", "prompt"),
    sage_ratio_by_cpu: cpuRatio("bare", "prompt_sage"),
    cache_ratio_by_cpu: cpuRatio("health", "cache_hit"),
    floor_ratio_by_cpu: cpuRatio("health", "floor"),
    cache_to_floor_ratio_by_cpu: cpuRatio("floor", "cache_hit"),
    // The same from the main thread's CPU alone: the event loop every case
    // shares, what bounds the rates (an op run on another thread is not in it).
    ratio_by_main: cpuRatio("bare", "prompt", mainCpu),
    sage_ratio_by_main: cpuRatio("bare", "prompt_sage", mainCpu),
    cache_ratio_by_main: cpuRatio("health", "cache_hit", mainCpu),
    // CPU of node, agent and clients together (one process): steadier than
    // rates on a shared machine.
    cpu_us_per_request: Object.fromEntries(
      cases.map((c) => [c, round(median(cpu.get(c)!))]),
    ),
    // The main thread's alone (node, agent and clients share it).
    main_us_per_request: Object.fromEntries(
      cases.map((c) => [c, round(median(mainCpu.get(c)!))]),
    ),
    // Round-trip times of the measured rounds, C requests in flight.
    latency_ms: Object.fromEntries(
      cases.map((c) => [c, { p50: quantile(c, 0.5), p99: quantile(c, 0.99) }]),
    ),
    // Every request of the run, warm-up included: a `--cpu-prof` profile
    // of a one-case run divided by this is CPU per request by function.
    requests: Object.fromEntries(made),
    spread: Object.fromEntries(
      cases.map((c) => [c, round(spread(rates[c]), 2)]),
    ),
    concurrency,
    rounds,
    ms,
  },
  notes:
    "one process: node, root agent and fetch clients share the event loop; targets: ratio >= 0.7 (without and with SAGE) and cache_ratio >= 0.7",
}));
