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
 * compare like with like). `C` is 64 for every case, where each was
 * saturated in runs of the probe here, or `--concurrency C`; with
 * `--concurrency auto` the bench finds it first by the same rule for all
 * (each case at 16, 32, 64, 128 in flight until its rate rises by no more
 * than 5 % a step; `C` is the largest such step, `details.probe` has the
 * rates). The same figures at 16 in flight follow in `details.at_16` (with
 * 16, a prompt's rate is bound by its latency: the event loop idles part of
 * the time). `sage_webcrypto` is the share of the SAGE case's verifies
 * (node) and signs (agent) that went to WebCrypto rather than `node:crypto`. A prompt round trip uses a new prompt each time
 * with `Cache-Control: no-cache`, so the agent is asked every time (and the
 * SAGE-off answer is still stored, as in production). Cache hits ask one
 * stored prompt again and again. Rounds alternate the cases; values are
 * medians. `cpu_us_per_request` is this process's CPU (all threads: node,
 * agent and clients) per request of each case, steadier than the rates when
 * others share the machine; `main_us_per_request` is its main thread's alone
 * (the one event loop every case runs on, which bounds the rates: work a
 * Deno op does on another thread counts in the first, not here);
 * `main_busy` is that thread's CPU per second of wall time (1 = a full
 * core; under it, the case waits on something else, or other jobs hold the
 * cores); `latency_ms` is each case's p50 and p99 round trip with `C` in
 * flight.
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
/**
 * Where the cases were saturated in the probe's runs here (docs/prompts.md,
 * "The bench's concurrency"): the prompt cases stopped rising at 32-64 in
 * flight, `/health` and cache hits at 16-32; steps of 750 ms swing by
 * ±30 % on the shared cores, so a probe per run chose 32 or 128 by chance.
 */
const DEFAULT_CONCURRENCY = 64;
/**
 * `--concurrency C`: every case at C in flight (DEFAULT_CONCURRENCY when
 * absent); `--concurrency auto`: probed first (PROBE_LEVELS).
 */
const fixedConcurrency = flag("concurrency") === "auto"
  ? undefined
  : numFlag("concurrency", DEFAULT_CONCURRENCY);
/** The concurrency reported besides (the bench's before). */
const BASE_CONCURRENCY = 16;
/** The probe's steps. */
const PROBE_LEVELS = [16, 32, 64, 128];
/** A rise of no more than this from one step to the next: saturated. */
const SATURATED = 0.05;

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

/** What one case measured at one concurrency. */
interface Measured {
  /** Requests/s, one value per round. */
  rates: number[];
  /** This process's CPU µs per request, one value per round. */
  cpu: number[];
  /** The same for the main thread alone. */
  main: number[];
  /** The main thread's CPU per second of wall time (1 = a full core), per round. */
  busy: number[];
  /** Round-trip times (ms). */
  times: number[];
  /** WebCrypto verifies and signs made, and requests answered. */
  web: { verify: number; sign: number };
  done: number;
}

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

/**
 * Runs `c` for `duration` ms with `inFlight` loops and adds what it measured
 * to `into` (when given); throws on a bad answer.
 */
async function run(
  c: Case,
  inFlight: number,
  duration: number,
  into?: Measured,
): Promise<number> {
  const end = performance.now() + duration;
  let done = 0;
  const times: number[] = [];
  const cpu0 = cpuMs("self"), main0 = mainThreadMs();
  const web0 = { ...webCalls };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: inFlight }, async () => {
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
  const wall = performance.now() - t0;
  const rate = done / (wall / 1000);
  made.set(c, (made.get(c) ?? 0) + done);
  if (into) {
    into.web.verify += webCalls.verify - web0.verify;
    into.web.sign += webCalls.sign - web0.sign;
    into.done += done;
    const mainMs = mainThreadMs() - main0;
    into.rates.push(rate);
    into.cpu.push((cpuMs("self") - cpu0) * 1000 / done);
    into.main.push(mainMs * 1000 / done);
    into.busy.push(mainMs / wall);
    into.times.push(...times);
  }
  return rate;
}

/** WebCrypto Ed25519 calls (verify on the node, sign in the agent) so far. */
const webCalls = { verify: 0, sign: 0 };
for (const op of ["verify", "sign"] as const) {
  const subtle = crypto.subtle;
  const original = subtle[op] as (...a: unknown[]) => Promise<unknown>;
  Object.defineProperty(subtle, op, {
    configurable: true,
    value: (...args: unknown[]) => {
      webCalls[op]++;
      return original.apply(subtle, args);
    },
  });
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
for (const c of cases) await run(c, BASE_CONCURRENCY, ms);

/**
 * The saturating concurrency, the same rule for every case: each case runs
 * at 16, 32, 64, 128 in flight (ms/2 each, the cases alternated at each
 * step) until its rate rises by no more than SATURATED (5 %) from one step
 * to the next; the step before that rise is where it saturated, and the
 * bench measures every case at the largest of those (where each is).
 */
const probe: Record<string, Record<number, number>> = {};
let concurrency = fixedConcurrency ?? 0;
if (fixedConcurrency === undefined) {
  const open = new Set(cases);
  const saturatedAt = new Map<Case, number>();
  let prev = new Map<Case, number>();
  for (const level of PROBE_LEVELS) {
    const now = new Map<Case, number>();
    for (const c of open) {
      const rate = await run(c, level, ms / 2);
      (probe[c] ??= {})[level] = round(rate);
      now.set(c, rate);
      const before = prev.get(c);
      if (before !== undefined && rate <= before * (1 + SATURATED)) {
        saturatedAt.set(c, level / 2);
        open.delete(c);
      }
    }
    prev = now;
    info(
      `probe ${level} in flight: ${
        [...now].map(([c, r]) => `${c} ${round(r)}/s`).join(", ")
      }`,
    );
  }
  for (const c of open) saturatedAt.set(c, PROBE_LEVELS.at(-1)!);
  concurrency = Math.max(...saturatedAt.values());
  info(`measuring at ${concurrency} in flight`);
}

/** Every case measured `rounds` times at `inFlight`, the rounds alternated. */
async function measure(inFlight: number): Promise<Map<Case, Measured>> {
  const out = new Map<Case, Measured>(
    cases.map((
      c,
    ) => [c, {
      rates: [],
      cpu: [],
      main: [],
      busy: [],
      times: [],
      web: { verify: 0, sign: 0 },
      done: 0,
    }]),
  );
  for (let r = 0; r < rounds; r++) {
    for (const c of r % 2 ? [...cases].reverse() : cases) {
      await run(c, inFlight, ms, out.get(c));
    }
    info(
      `${inFlight} in flight, round ${r + 1}/${rounds}: ${
        cases.map((c) => `${c} ${round(out.get(c)!.rates.at(-1)!)}/s`).join(
          ", ",
        )
      }`,
    );
  }
  return out;
}

const saturated = await measure(concurrency);
const atBase = concurrency === BASE_CONCURRENCY
  ? saturated
  : await measure(BASE_CONCURRENCY);

/** The `q` quantile (0-1) of sorted `s`, ms. */
function quantile(s: number[], q: number): number {
  return round(s[Math.min(s.length - 1, Math.floor(q * s.length))], 2);
}

/** Rates, ratios, CPU and latencies of one concurrency's measurements. */
function summary(at: Map<Case, Measured>) {
  const m = (c: Case) => at.has(c) ? median(at.get(c)!.rates) : NaN;
  /** Median of `base`'s ÷ that of `c` (field `f`), when both ran. */
  const by = (base: Case, c: Case, f: "cpu" | "main") => {
    const b = at.get(base)?.[f], x = at.get(c)?.[f];
    return b && x ? round(median(b) / median(x), 2) : null;
  };
  const per = (f: (x: Measured) => unknown) =>
    Object.fromEntries(cases.map((c) => [c, f(at.get(c)!)]));
  for (const c of cases) at.get(c)!.times.sort((a, b) => a - b);
  return {
    prompt_per_s: round(m("prompt")),
    bare_per_s: round(m("bare")),
    ratio: round(m("prompt") / m("bare"), 2),
    prompt_sage_per_s: round(m("prompt_sage")),
    sage_ratio: round(m("prompt_sage") / m("bare"), 2),
    cache_hits_per_s: round(m("cache_hit")),
    health_per_s: round(m("health")),
    cache_ratio: round(m("cache_hit") / m("health"), 2),
    cache_hits_anonymous_per_s: round(m("cache_hit_anonymous")),
    cache_anonymous_ratio: round(m("cache_hit_anonymous") / m("health"), 2),
    // An authenticated, audited POST answering a constant: the floor of any
    // /api/v1 POST here, and a hit against it.
    floor_per_s: round(m("floor")),
    floor_ratio: round(m("floor") / m("health"), 2),
    cache_to_floor_ratio: round(m("cache_hit") / m("floor"), 2),
    // The same floor answered only once its audit record is durable.
    floor_waited_per_s: round(m("floor_waited")),
    floor_waited_ratio: round(m("floor_waited") / m("health"), 2),
    // The same POST to a bare Deno.serve (no app, auth or audit): the most
    // any POST of this shape can reach here.
    raw_post_per_s: round(m("raw_post")),
    raw_post_ratio: round(m("raw_post") / m("health"), 2),
    // GET /health answered by the whole app (middleware, router, handler)
    // rather than its cached-answer path: what the app adds to any request.
    health_app_per_s: round(m("health_app")),
    health_app_ratio: round(m("health_app") / m("health"), 2),
    // The same ratios from CPU per request (baseline's ÷ the case's): what
    // the rates would be if every case were CPU-bound on one core.
    ratio_by_cpu: by("bare", "prompt", "cpu"),
    sage_ratio_by_cpu: by("bare", "prompt_sage", "cpu"),
    cache_ratio_by_cpu: by("health", "cache_hit", "cpu"),
    floor_ratio_by_cpu: by("health", "floor", "cpu"),
    cache_to_floor_ratio_by_cpu: by("floor", "cache_hit", "cpu"),
    // The same from the main thread's CPU alone: the event loop every case
    // shares, what bounds the rates (an op run on another thread is not in it).
    ratio_by_main: by("bare", "prompt", "main"),
    sage_ratio_by_main: by("bare", "prompt_sage", "main"),
    cache_ratio_by_main: by("health", "cache_hit", "main"),
    // CPU of node, agent and clients together (one process): steadier than
    // rates on a shared machine.
    cpu_us_per_request: per((x) => round(median(x.cpu))),
    // The main thread's alone (node, agent and clients share it).
    main_us_per_request: per((x) => round(median(x.main))),
    // The main thread's CPU per second (1 = a full core): near 1, the case
    // is saturated; well below, its rate is bound by latency.
    main_busy: per((x) => round(median(x.busy), 2)),
    // Round-trip times, this many requests in flight.
    latency_ms: per((x) => ({
      p50: quantile(x.times, 0.5),
      p99: quantile(x.times, 0.99),
    })),
    spread: per((x) => round(spread(x.rates), 2)),
    // Of the SAGE case's verifications (one a prompt) and signatures, the
    // share made with WebCrypto (the rest with node:crypto).
    sage_webcrypto: at.has("prompt_sage")
      ? {
        verify: round(
          at.get("prompt_sage")!.web.verify / at.get("prompt_sage")!.done,
          2,
        ),
        sign: round(
          at.get("prompt_sage")!.web.sign / at.get("prompt_sage")!.done,
          2,
        ),
      }
      : null,
  };
}

await agent.close();
await rawServer.shutdown();
await node.shutdown();
await Deno.remove(dir, { recursive: true }).catch(() => {});

const sat = summary(saturated);
const base = summary(atBase);
console.log(JSON.stringify({
  bench: "prompts",
  metric: "prompt_round_trips_per_s",
  unit: "1/s",
  value: sat.prompt_per_s,
  baseline: {
    name: "bare sealed gateway request to the same agent, same HTTP chain",
    value: sat.bare_per_s,
  },
  ratio: sat.ratio,
  details: {
    ...sat,
    // Every case's rate at 16, 32, 64, 128 in flight until it stopped
    // rising (the probe that chose `concurrency`; absent with --concurrency).
    probe,
    // The same figures at 16 in flight, where the prompt cases are bound by
    // latency rather than the event loop (the bench's concurrency before).
    at_16: concurrency === BASE_CONCURRENCY ? "as above" : base,
    // Every request of the run, warm-up and probe included: a `--cpu-prof`
    // profile of a one-case run divided by this is CPU per request by function.
    requests: Object.fromEntries(made),
    concurrency,
    rounds,
    ms,
  },
  notes:
    "one process: node, root agent and fetch clients share the event loop; every case measured at the concurrency where all are saturated (details.probe), and at 16 (details.at_16); targets: ratio >= 0.7 (without and with SAGE) and cache_ratio >= 0.7",
}));
