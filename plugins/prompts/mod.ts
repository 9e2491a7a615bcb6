/**
 * The prompt service as a plugin (`builtin:prompts`): `POST /send/prompt`
 * and `POST /api/v1/prompts` (permission `prompt:send`) take
 * `{"prompt","sageEnabled"?,"scenario"?,"metadata"?}` (headers
 * `X-SAGE-Enabled` and `X-Scenario` win over the body), send the prompt to a
 * root agent picked by capability through the agent gateway, route the
 * agents' asks to each other, verify every hop's signature in SAGE mode, and
 * answer `{"response","sageVerification"?,"metadata","logs"}` (as
 * Server-Sent Events with `Accept: text/event-stream`). Every routing step is
 * also a `routing` record on `WS /ws`. Answers without SAGE are cached in KV
 * (`X-Cache`), stale ones stand in when no agent can answer, and a node with
 * no agent for a capability sends the hop to a node that has one. Settings are
 * `pluginConfig.prompts` ({@linkcode promptsConfigSchema}); see
 * docs/prompts.md.
 *
 * It uses only the public plugin contract and the `gateway:agents`
 * capability; another plugin reaches it as `extension:prompts`
 * ({@linkcode PromptsApi}), e.g. to register a DID resolver.
 *
 * @example Load it
 * ```sh ignore
 * deno task start --plugin builtin:prompts
 * ```
 *
 * @module
 */
import type { Context } from "hono";
import {
  type Balancer,
  type BalancerApi,
  definePlugin,
  type Envelope,
  type HealthEntry,
  markUnchanged,
  PlexusError,
  storeWithAudit,
} from "../../core/plugin.ts";
import { VERSION } from "../../core/version.ts";
import type { AgentGateway } from "../../gateway/gateway.ts";
import { type PromptsConfig, promptsConfigSchema } from "./config.ts";
import { createDidResolvers, type DidResolvers } from "./did.ts";
import { parsePromptInput, type PromptInput } from "./input.ts";
import { type CacheEntry, createPromptCache } from "./cache.ts";
import { createLimiter } from "./limiter.ts";
import { createPromptCluster, type PromptNode } from "./cluster.ts";
import { GatewayRequestError } from "../../gateway/gateway.ts";
import {
  type AnswerOptions,
  cachedResult,
  createPromptService,
  type PromptResult,
  type PromptService,
  type RemoteAsk,
  type RemotePartial,
} from "./service.ts";

export { type PromptsConfig, promptsConfigSchema } from "./config.ts";
export {
  createDidResolvers,
  didKeyResolver,
  type DidResolver,
  type DidResolvers,
} from "./did.ts";
export { type PromptInput } from "./input.ts";
export type {
  ChainLink,
  PromptResult,
  RoutingLog,
  SageVerification,
} from "./service.ts";

/** What `kernel.get("extension:prompts")` returns. */
export interface PromptsApi {
  /** The service (answer prompts from another plugin). */
  service: PromptService;
  /** DID resolvers used to verify SAGE hops: register `did:web` & co. here. */
  resolvers: DidResolvers;
}

/** The `err` codes of the agent protocol, rebuilt as such from another node's answer. */
const PROTOCOL_CODES = new Set([
  "forbidden",
  "bad_request",
  "unavailable",
  "timeout",
  "no_handler",
]);

/** Answers per scenario the latency quantiles are computed over. */
const LATENCY_WINDOW = 1024;

/** Round-robin over whatever candidates are given, when no balancer plugin is loaded. */
function rotating(): Balancer {
  let next = 0;
  return {
    name: "prompts-round-robin",
    pick: (candidates) =>
      candidates.length ? candidates[next++ % candidates.length] : undefined,
    report: () => {},
  };
}

/** The JSON error response of a refused prompt. */
function errorJson(err: PlexusError): Response {
  const headers: Record<string, string> = {};
  if (err.retryable && err.retryAfterS !== undefined) {
    headers["Retry-After"] = String(err.retryAfterS);
  }
  return Response.json(
    { error: { code: err.code, message: err.message } },
    { status: err.status, headers },
  );
}

/** The prompt service plugin. */
const promptsPlugin = definePlugin<PromptsConfig>({
  manifest: {
    name: "prompts",
    version: VERSION,
    kind: "extension",
    api: "^1",
    provides: ["extension:prompts"],
    requires: ["gateway:agents"],
    config: promptsConfigSchema,
  },
  setup(ctx) {
    const config = ctx.config;
    const gateway = ctx.kernel.get<AgentGateway>("gateway:agents");
    const balancerName = `balancer:${config.balancer}`;
    const balancer = ctx.kernel.has(balancerName)
      ? (ctx.kernel.get<Partial<BalancerApi> & Balancer>(balancerName)
        .create?.() ?? ctx.kernel.get<Balancer>(balancerName))
      : rotating();
    const resolvers = createDidResolvers();

    const requests = ctx.metrics.counter(
      "plexus_prompts_requests_total",
      "Prompts answered, by scenario and outcome (ok, error, refused)",
    );
    const duration = ctx.metrics.histogram(
      "plexus_prompts_duration_seconds",
      "Time to answer a prompt, by scenario",
      [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    );
    const verificationFailures = ctx.metrics.counter(
      "plexus_prompts_verification_failures_total",
      "SAGE hop signatures that failed verification",
    );
    /** The last LATENCY_WINDOW answer times per scenario, seconds, for the quantile gauge. */
    const windows = new Map<string, { times: number[]; next: number }>();
    // Series bound once per label set (scenarios are a configured few):
    // label encoding was a visible part of a cache hit's CPU.
    const bound = <T>(make: (key: string) => T) => {
      const made = new Map<string, T>();
      return (key: string): T => {
        let b = made.get(key);
        if (b === undefined) made.set(key, b = make(key));
        return b;
      };
    };
    const durationOf = bound((scenario) => duration.labels({ scenario }));
    const observe = (scenario: string, seconds: number) => {
      durationOf(scenario).observe(seconds);
      let w = windows.get(scenario);
      if (!w) windows.set(scenario, w = { times: [], next: 0 });
      // A ring: the oldest time is overwritten (no shift of 1,024 numbers).
      if (w.times.length < LATENCY_WINDOW) w.times.push(seconds);
      else {
        w.times[w.next] = seconds;
        w.next = (w.next + 1) % LATENCY_WINDOW;
      }
    };
    const quantiles = ctx.metrics.gauge(
      "plexus_prompts_latency_seconds",
      `Prompt answer time quantiles (0.5, 0.95, 0.99) over the last ${LATENCY_WINDOW} answers, by scenario`,
      () => {
        for (const [scenario, w] of windows) {
          const sorted = [...w.times].sort((x, y) => x - y);
          for (const q of [0.5, 0.95, 0.99]) {
            const i = Math.min(
              sorted.length - 1,
              Math.ceil(q * sorted.length) - 1,
            );
            quantiles.set(sorted[i], { scenario, quantile: String(q) });
          }
        }
      },
    );
    /** Latest root hop latency per agent (ms), for /health. */
    const rootLatency = new Map<string, number>();

    const cluster = createPromptCluster(
      ctx.kv,
      ctx.node, // its address is known once the node listens: read at each write
      () => Object.keys(gateway.capabilities()),
      { intervalMs: config.advertiseMs },
    );
    /** A node-to-node call to another node's prompt service. */
    const callNode = async (
      node: PromptNode,
      path: string,
      body: unknown,
      timeoutMs: number,
      signal?: AbortSignal,
    ): Promise<unknown> => {
      let res: Response;
      const timeout = AbortSignal.timeout(timeoutMs);
      try {
        res = await ctx.nodeFetch(
          new URL(`/api/v1/prompts/${path}`, node.address),
          {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify(body),
            signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
          },
        );
      } catch (err) {
        throw new GatewayRequestError(
          "unavailable",
          `node ${node.id} (${node.address}) did not answer: ${
            (err as Error).message
          }`,
        );
      }
      const json = await res.json().catch(() => ({})) as {
        error?: { code?: string; message?: string };
      };
      if (res.ok) return json;
      const code = json.error?.code ?? "unavailable";
      const message = `node ${node.id}: ${json.error?.message ?? res.status}`;
      if (PROTOCOL_CODES.has(code)) {
        throw new GatewayRequestError(code as "unavailable", message);
      }
      throw new PlexusError(code, message, { status: res.status });
    };
    const service = createPromptService({
      gateway,
      log: ctx.log,
      config,
      nodeId: ctx.node.id,
      balancer,
      resolvers,
      onVerificationFailure: () => verificationFailures.inc(),
      onRootOutcome: (agent, ok, ms) => {
        // Rounded when /health reads it, not per answer.
        if (ok) rootLatency.set(agent, ms);
      },
      remote: {
        nodesFor: cluster.nodesFor,
        hop: async (node, capability, body, timeoutMs, signal) =>
          await callNode(
            node,
            "hop",
            {
              capability,
              body,
              timeoutMs,
              origin: { id: ctx.node.id, address: ctx.node.address },
            },
            timeoutMs + 1000,
            signal,
          ) as { agent: string; answer: unknown },
        route: (origin, ask) =>
          callNode(origin, "route", ask, config.timeoutMs),
        partial: (origin, pieces) =>
          callNode(origin, "partial", pieces, config.timeoutMs),
        cancel: (node, c) => callNode(node, "cancel", c, 5000),
      },
    });
    cluster.start();
    const offRoute = gateway.onRequest("agent.*.requests.route", service.route);
    // Pieces of answers agents stream (`msg` on agent.{id}.requests.stream).
    const offStream = ctx.router.subscribe(
      "agent.*.requests.stream",
      (event) => {
        const env = event as Envelope;
        service.partial(env.source, env.payload);
      },
    );
    const limiter = createLimiter(config);

    const cache = createPromptCache(ctx.kv, config.cache);
    const cacheResults = ctx.metrics.counter(
      "plexus_prompts_cache_total",
      "Prompt cache lookups by result (hit, miss, stale, bypass)",
    );
    const cacheResult = bound((result) => cacheResults.labels({ result }));

    /** Whether an error means no agent could answer (a stale answer may stand in). */
    const degradable = (err: PlexusError) =>
      err.code === "no_agent" || err.code === "agent_unavailable" ||
      err.code === "timeout";

    type CacheState = "HIT" | "MISS" | "STALE";
    /** The cache key of a prompt (undefined: not cacheable), and a fresh answer when there is one. */
    type Found = { key?: string; entry?: CacheEntry; hit?: PromptResult };
    /**
     * The cache key and entry of a prompt: at once (no await) when the
     * cache is not read (SAGE, `no-cache`, cache off), else once read.
     */
    const lookup = (
      input: PromptInput,
      requestId: string,
      t0: number,
    ): Found | Promise<Found> => {
      if (!config.cache.enabled || input.sage) return {};
      const key = cache.keyOf(input, input.cacheKeyFields);
      if (input.noCache) {
        cacheResult("bypass").inc();
        return { key };
      }
      return cache.get(key).then((entry): Found => {
        if (entry?.state !== "fresh") {
          cacheResult("miss").inc();
          return { key, entry };
        }
        cacheResult("hit").inc();
        return {
          key,
          entry,
          hit: cachedResult(input, entry, {
            nodeId: ctx.node.id,
            requestId,
            startedAt: t0,
            log: ctx.log,
          }),
        };
      });
    };

    /** Asks the agents (after a miss), storing the answer; a stale one when none can answer. */
    const ask = async (
      input: PromptInput,
      found: { key?: string; entry?: CacheEntry },
      options: AnswerOptions & {
        requestId: string;
        /** Aborted when a streamed prompt's client goes away. */
        signal?: AbortSignal;
        /** The request being answered (not for streamed answers: already answered). */
        request?: Request;
      },
      t0: number,
    ): Promise<{ result: PromptResult; cache: CacheState }> => {
      const { key } = found;
      const requestId = options.requestId;
      // A free slot is taken without an await (most prompts).
      const release = limiter.tryAcquire() ??
        await limiter.acquire(options.signal);
      try {
        const result = await service.answer(input, options);
        if (key !== undefined) {
          const answer = {
            response: result.response,
            agent: result.metadata.agent,
          };
          // Stored in the commit of this request's audit record, which the
          // answer waits for anyway: one fsync'd commit fewer per miss.
          const e = options.request && cache.entry(key, answer);
          const along = e &&
            storeWithAudit(options.request!, ctx.kv, e.kvKey, e.value, {
              expireIn: e.expireIn,
              bytes: e.bytes,
            });
          if (along) {
            along.then((ok) => {
              if (ok) cache.stored(key, e);
              else ctx.log.warn("prompt answer not cached", { requestId });
            });
          } else {
            await cache.put(key, answer).catch((err) =>
              ctx.log.warn("prompt answer not cached", {
                requestId,
                error: err,
              })
            );
          }
        }
        return { cache: "MISS", result };
      } catch (err) {
        if (
          key === undefined || !(err instanceof PlexusError) || !degradable(err)
        ) throw err;
        const entry = found.entry ?? await cache.get(key);
        if (!entry) throw err;
        cacheResult("stale").inc();
        return {
          cache: "STALE",
          result: cachedResult(input, entry, {
            nodeId: ctx.node.id,
            requestId,
            startedAt: t0,
            stale: { reason: err.message },
            log: ctx.log,
          }),
        };
      } finally {
        release();
      }
    };

    const answered = bound((scenario) =>
      requests.labels({ scenario, outcome: "ok" })
    );
    const outcome = (scenario: string, t0: number, err?: unknown) => {
      if (err === undefined) {
        answered(scenario).inc();
        observe(scenario, (performance.now() - t0) / 1000);
        return;
      }
      if (!(err instanceof PlexusError)) return;
      requests.inc({
        scenario,
        outcome: err.status < 500 ? "refused" : "error",
      });
      if (err.status >= 500) {
        observe(scenario, (performance.now() - t0) / 1000);
        ctx.log.warn("prompt failed", { code: err.code, error: err.message });
      }
    };

    /** The answer as Server-Sent Events: routing logs and partial output as they come, then the result. */
    const streamed = (
      input: PromptInput,
      found: { key?: string; entry?: CacheEntry },
      requestId: string,
      t0: number,
      cacheHeader: CacheState,
    ): Response => {
      const encoder = new TextEncoder();
      const gone = new AbortController();
      let open = true;
      const body = new ReadableStream<Uint8Array>({
        start(out) {
          const send = (event: string, data: unknown) => {
            if (!open) return;
            try {
              out.enqueue(
                encoder.encode(
                  `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`,
                ),
              );
            } catch {
              open = false;
            }
          };
          const scenario = input.scenario ?? "none";
          ask(input, found, {
            requestId,
            signal: gone.signal,
            onLog: (entry) => send("log", entry),
            onPartial: (p) => send("partial", p),
          }, t0).then(({ result, cache }) => {
            outcome(scenario, t0);
            send("result", { ...result, cache });
          }, (err) => {
            outcome(scenario, t0, err);
            const e = err instanceof PlexusError
              ? { code: err.code, message: err.message }
              : { code: "internal", message: "internal error" };
            if (!(err instanceof PlexusError)) {
              ctx.log.error("prompt stream failed", { requestId, error: err });
            }
            send("error", { error: e });
          }).finally(() => {
            if (!open) return;
            open = false;
            try {
              out.close();
            } catch { /* cancelled meanwhile */ }
          });
        },
        cancel() {
          open = false;
          gone.abort(new Error("the client went away"));
        },
      });
      return new Response(body, {
        headers: {
          "content-type": "text/event-stream; charset=utf-8",
          "cache-control": "no-cache",
          "x-cache": cacheHeader,
          "x-request-id": requestId,
        },
      });
    };

    const handle = async (c: Context): Promise<Response> => {
      const t0 = performance.now();
      let scenario = "none";
      try {
        let body: unknown;
        try {
          body = await c.req.json();
        } catch (err) {
          throw new PlexusError(
            "bad_request",
            `the body is not JSON: ${(err as Error).message}`,
            { status: 400 },
          );
        }
        const input = parsePromptInput(body, c.req.raw.headers, config);
        scenario = input.scenario ?? "none";
        const requestId = crypto.randomUUID();
        const looked = lookup(input, requestId, t0);
        const found = looked instanceof Promise ? await looked : looked;
        const sse = /\btext\/event-stream\b/.test(c.req.header("accept") ?? "");
        if (sse && !found.hit) {
          return streamed(input, found, requestId, t0, "MISS");
        }
        // No `signal` from the request: reading `req.signal` makes Deno
        // build a DOMException when it aborts it after every response (~10
        // µs a prompt). A client that leaves before a whole answer does not
        // stop it; the answer is still cached. A streamed prompt is
        // cancelled (its stream's `cancel`, above).
        const { result, cache } = found.hit
          ? { result: found.hit, cache: "HIT" as const }
          : await ask(input, found, { requestId, request: c.req.raw }, t0);
        outcome(scenario, t0);
        // A hit changed nothing: its audit record need not be durable first.
        if (found.hit) markUnchanged(c.req.raw);
        if (sse) {
          return new Response(
            `event: result\ndata: ${JSON.stringify({ ...result, cache })}\n\n`,
            {
              headers: {
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "x-cache": cache,
              },
            },
          );
        }
        // Built here, not with c.json: Hono's copies the headers once more.
        // X-Cache set on the built response: a second header in the init
        // object took Deno's slower header path (~1 µs more a response).
        const res = new Response(JSON.stringify(result), {
          headers: { "content-type": "application/json" },
        });
        res.headers.set("x-cache", cache);
        return res;
      } catch (err) {
        if (!(err instanceof PlexusError)) throw err;
        outcome(scenario, t0, err);
        return errorJson(err);
      }
    };

    /** A refusal of a node-to-node call, with the code the caller rebuilds. */
    const nodeError = (err: unknown): Response => {
      if (err instanceof GatewayRequestError) {
        return Response.json(
          { error: { code: err.code, message: err.message } },
          { status: 502 },
        );
      }
      if (err instanceof PlexusError) return errorJson(err);
      throw err;
    };
    const nodeOf = (c: { var: { principal: { sub: string } } }) =>
      c.var.principal.sub.replace(/^node:/, "");

    ctx.api("prompts")
      .post("/", "prompt:send", handle)
      // Another node sends a hop of one of its prompts to an agent here.
      .post("/hop", "node", async (c) => {
        const b = await c.req.json() as {
          capability: string;
          body: Record<string, unknown>;
          timeoutMs: number;
          origin: PromptNode;
        };
        if (b.origin?.id !== nodeOf(c)) {
          return errorJson(
            new PlexusError("forbidden", "origin is not the calling node", {
              status: 403,
            }),
          );
        }
        try {
          return c.json(
            await service.carry(b.origin, b.capability, b.body, b.timeoutMs),
          );
        } catch (err) {
          return nodeError(err);
        }
      })
      // The node answering a prompt gave up on it: stop the hops carried here.
      .post("/cancel", "node", async (c) => {
        const b = await c.req.json() as { requestId?: unknown; via?: unknown };
        if (b.via !== nodeOf(c) || typeof b.requestId !== "string") {
          return errorJson(
            new PlexusError(
              "forbidden",
              "via is not the calling node, or no requestId",
              { status: 403 },
            ),
          );
        }
        return c.json({
          cancelled: service.cancelRemote({
            requestId: b.requestId,
            via: b.via,
          }),
        });
      })
      // Pieces an agent connected to another node streamed, for a prompt answered here.
      .post("/partial", "node", async (c) => {
        const p = await c.req.json() as RemotePartial;
        if (p.via !== nodeOf(c) || !Array.isArray(p.pieces)) {
          return errorJson(
            new PlexusError(
              "forbidden",
              "via is not the calling node, or no pieces",
              { status: 403 },
            ),
          );
        }
        return c.json({ taken: service.partialRemote(p) });
      })
      // An agent connected to another node asks, for a prompt answered here.
      .post("/route", "node", async (c) => {
        const ask = await c.req.json() as RemoteAsk;
        if (ask.via !== nodeOf(c)) {
          return errorJson(
            new PlexusError("forbidden", "via is not the calling node", {
              status: 403,
            }),
          );
        }
        try {
          return c.json(await service.routeRemote(ask));
        } catch (err) {
          return nodeError(err);
        }
      });
    if (config.anonymous) ctx.http.post("/send", handle);

    const api: PromptsApi = { service, resolvers };
    return Promise.resolve({
      api,
      health() {
        const roots = service.rootAgents();
        // Each root agent connected here is its own /health entry
        // (`prompts/root/{id}`), with the latency of its last answer.
        const entries: Record<string, HealthEntry> = {};
        for (const id of roots) {
          const latency = rootLatency.get(id);
          entries[`root/${id}`] = latency === undefined
            ? { status: "up", detail: "connected; no prompt answered yet" }
            : { status: "up", latency: +latency.toFixed(2) };
        }
        return Promise.resolve({
          status: "up" as const,
          detail: roots.length
            ? `${roots.length} root agent${
              roots.length === 1 ? "" : "s"
            } ('${config.capability}') connected here`
            : `no root agent ('${config.capability}') connected here`,
          entries,
        });
      },
      async stop() {
        offRoute();
        offStream();
        await cluster.stop();
      },
    });
  },
});

export default promptsPlugin;
