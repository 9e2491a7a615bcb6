/**
 * The node's Hono app: request ids and correlation, metrics, access logs, the
 * JSON error shape, `/health`, `/metrics`, `/stats`, `/ws` and plugin routes
 * (`/plugins/{name}/*` outside the API chain, `/api/v1/{prefix}/*` inside it).
 *
 * @module
 */
import {
  type Context,
  type Env,
  type ErrorHandler,
  Hono,
  type Next,
  type NotFoundHandler,
} from "hono";
import { HTTPException } from "hono/http-exception";
import { bodyLimit } from "hono/body-limit";
import { cors as honoCors } from "hono/cors";
import type { Kernel, SwapReport } from "../kernel.ts";
import type { Logger } from "../observe/logger.ts";
import { withCorrelation } from "../observe/logger.ts";
import { otelEnabled, serverSpan, traceIdOf } from "../observe/otel.ts";
import type { MetricsRegistry } from "../observe/metrics.ts";
import type { LogStream } from "../observe/log_stream.ts";
import { type NodeIdentity, PluginError } from "../plugin.ts";
import { HEALTH_PROBE_KEY } from "../state/keys.ts";
import { errorBody, errorResponse, plexusErrorResponse } from "./errors.ts";
import type { TaskService } from "../tasks.ts";
import { clusterView, type Registry } from "../state/registry.ts";
import { clusterTaskRoutes, taskRoutes } from "./tasks.ts";
import { serviceRoutes } from "./services.ts";
import type { ApiEnv } from "./plugin_api.ts";
import { PlexusError } from "../errors.ts";
import { auditLog, type AuditMiddleware } from "../security/audit.ts";
import {
  clientIp,
  rateLimit,
  rateLimitCheck,
  websocketHandshakeLimit,
} from "./rate_limit.ts";
import { upgradeOriginGuard } from "./origin.ts";
import {
  authCheck,
  type AuthVariables,
  principalOf,
  requirePermission,
  unauthorized,
} from "./auth.ts";
import {
  maybeSignResponse,
  type Security,
  securityRoutes,
} from "./security.ts";

/** The plugin whose app answers `/` and `/ui/*` (the operator's console). */
export const DASHBOARD_PLUGIN = "dashboard";
/** Header carrying the request id on every response. */
export const REQUEST_ID_HEADER = "X-Request-Id";
const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;
/**
 * Security headers on every answer: the OWASP REST set for a JSON API (no
 * HTML here, so no script policy, just no framing, no sniffing, HTTPS only).
 */
export const API_SECURITY_HEADERS: readonly [string, string][] = [
  ["content-security-policy", "frame-ancestors 'none'"],
  ["strict-transport-security", "max-age=15552000; includeSubDomains"],
  ["x-content-type-options", "nosniff"],
  ["x-frame-options", "DENY"],
  ["referrer-policy", "no-referrer"],
];
/** The seed's prompt endpoint, an alias of `POST /api/v1/prompts` (CONTRACTS.md). */
const SEND_PROMPT = "/send/prompt";
/** Routes logged at debug rather than info, so probes do not flood the logs. */
const QUIET_ROUTES = new Set(["/health", "/metrics", "/stats"]);

/** A service's health as `/health` reports it. */
export interface ServiceHealth {
  name: string;
  status: "up" | "down";
  latency?: number;
  detail?: string;
}

/** The `/health` body. */
export interface HealthReport {
  status: "healthy" | "degraded" | "unhealthy";
  timestamp: string;
  version: string;
  nodeId: string;
  services: Record<string, ServiceHealth>;
}

/** Everything the app reads from the running node. */
export interface AppDeps {
  kernel: Kernel;
  kv: Deno.Kv;
  metrics: MetricsRegistry;
  log: Logger;
  logStream: LogStream;
  node: NodeIdentity;
  /** The node registry; `/api/v1/cluster` lists its members when no consensus plugin runs. */
  registry?: Pick<Registry, "members" | "self">;
  /**
   * Origins allowed by CORS and to open WebSockets (besides the node's own);
   * none means no CORS headers at all. @default {[]}
   */
  corsOrigins?: string[];
  /** Largest request body on any route (413 above). @default {1048576} */
  bodyLimitBytes?: number;
  /** Serves `/api/v1/tasks` when given. */
  tasks?: TaskService;
  /** Reuse a health report for this long. @default {1000} */
  healthCacheMs?: number;
  /** Authentication, keys and rate limits: `/api/v1/*` is closed without them. */
  security: Security;
  /** True once shutdown began: health turns unhealthy, new sockets refused. */
  draining: () => boolean;
  /**
   * Serves `POST /api/v1/plugins/{name}/reload` (hot swap, admin) when
   * given: the node's `reload`.
   */
  reload?: (name: string) => Promise<SwapReport & { trust: string }>;
  /**
   * A sandboxed plugin's Worker, for `GET /api/v1/plugins` to report its
   * `restarts` and `crashes`; undefined for a trusted plugin.
   */
  sandboxOf?: (
    name: string,
  ) =>
    | { readonly starts: number; readonly crashes: readonly unknown[] }
    | undefined;
}

/** The node's HTTP surface. */
export interface HttpApp {
  /** The Hono app (every route). */
  app: Hono<{ Variables: AuthVariables }>;
  /**
   * The handler to serve: answers `GET /health` from its cached report ahead
   * of the router (probes are the hottest path), with the same request id,
   * metrics and logging as every other route; everything else goes to `app`.
   */
  fetch(
    req: Request,
    info?: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ): Response | Promise<Response>;
  /** Stores the audit records not yet committed (before KV closes). */
  drainAudit(): Promise<void>;
}

/**
 * Builds the app.
 *
 * @example Usage
 * ```ts ignore
 * const { fetch } = createApp({ kernel, kv, metrics, log, logStream, node, draining: () => false });
 * Deno.serve(fetch);
 * ```
 */
export function createApp(deps: AppDeps): HttpApp {
  const { kernel, kv, metrics, log, logStream, node, security } = deps;
  const app = new Hono<{ Variables: AuthVariables }>();
  const requests = metrics.counter(
    "plexus_http_requests_total",
    "HTTP requests by method, route and status",
  );
  const duration = metrics.histogram(
    "plexus_http_request_duration_seconds",
    "HTTP request latency by method and route",
  );
  const started = performance.now();
  const mem = () => Deno.memoryUsage();
  const rss = metrics.gauge(
    "plexus_process_resident_memory_bytes",
    "Resident set size",
    () => rss.set(mem().rss),
  );
  const heap = metrics.gauge(
    "plexus_process_heap_used_bytes",
    "V8 heap used",
    () => heap.set(mem().heapUsed),
  );
  const heapTotal = metrics.gauge(
    "plexus_process_heap_total_bytes",
    "V8 heap total",
    () => heapTotal.set(mem().heapTotal),
  );
  const uptime = metrics.gauge(
    "plexus_process_uptime_seconds",
    "Seconds since the node started",
    () => uptime.set(Math.round((performance.now() - started) / 1000)),
  );
  const wsClients = metrics.gauge(
    "plexus_log_stream_clients",
    "Clients on the live log stream",
    () => wsClients.set(logStream.stats().clients),
  );
  logStream.instrument(metrics);

  // Bound series per (method, route, status): label encoding once, not per request.
  const bound = new Map<string, { inc(): void; observe(v: number): void }>();
  const record = (
    method: string,
    route: string,
    status: number,
    seconds: number,
  ) => {
    const key = `${method} ${route} ${status}`;
    let b = bound.get(key);
    if (!b) {
      const c = requests.labels({ method, route, status: String(status) });
      const h = duration.labels({ method, route });
      b = { inc: () => c.inc(), observe: (v) => h.observe(v) };
      bound.set(key, b);
    }
    b.inc();
    b.observe(seconds);
  };
  const givenId = (req: Request) => {
    const given = req.headers.get(REQUEST_ID_HEADER);
    if (given && REQUEST_ID_RE.test(given)) return given;
    // A request that belongs to a trace is correlated by its trace id.
    return traceIdOf(req.headers.get("traceparent"));
  };
  const requestId = (req: Request) => givenId(req) ?? crypto.randomUUID();
  const finish = (
    id: string,
    method: string,
    path: string,
    route: string,
    status: number,
    seconds: number,
  ) => {
    record(method, route, status, seconds);
    const level = QUIET_ROUTES.has(route) && status < 500
      ? "debug"
      : status >= 500
      ? "error"
      : "info";
    if (log.enabled(level)) {
      log[level]("http request", {
        correlationId: id,
        method,
        path,
        route,
        status,
        ms: +(seconds * 1000).toFixed(2),
      });
    }
  };

  // The route label of requests a plugin's app answered (see pluginRoute).
  const pluginRoutes = new WeakMap<Request, string>();
  const handle = async (c: Context, next: Next, id: string) => {
    const t0 = performance.now();
    await withCorrelation(id, () => cors ? next() : guard(c, next));
    const seconds = (performance.now() - t0) / 1000;
    // Set on the response in place: c.header() after next() would rebuild it.
    // A page (the dashboard) sets its own, stricter script policy: kept.
    const headers = c.res.headers;
    const own = headers.has("content-security-policy");
    try {
      for (const [k, v] of API_SECURITY_HEADERS) {
        if (!own || k !== "content-security-policy") headers.set(k, v);
      }
      headers.set(REQUEST_ID_HEADER, id);
    } catch {
      // Immutable headers, e.g. a fetched response: Hono copies it.
      for (const [k, v] of API_SECURITY_HEADERS) {
        if (!own || k !== "content-security-policy") c.header(k, v);
      }
      c.header(REQUEST_ID_HEADER, id);
    }
    const route = pluginRoutes.get(c.req.raw) ??
      (c.req.routePath === "/*" ? "unmatched" : c.req.routePath);
    finish(id, c.req.method, c.req.path, route, c.res.status, seconds);
    return route;
  };
  app.use(
    otelEnabled
      // A server span per request, continuing an incoming traceparent; its
      // trace id is the correlation id unless the client sent X-Request-Id.
      ? (c, next) =>
        serverSpan(c.req.raw, async (s) => {
          const id = givenId(c.req.raw) ?? s!.spanContext().traceId;
          const route = await handle(c, next, id);
          s!.updateName(`${c.req.method} ${route}`);
          s!.setAttributes({
            "http.route": route,
            "url.path": c.req.path,
            "http.response.status_code": c.res.status,
          });
        })
      : async (c, next) => {
        await handle(c, next, requestId(c.req.raw));
      },
  );

  const corsLayer = deps.corsOrigins?.length
    ? honoCors({
      origin: deps.corsOrigins,
      allowMethods: ["GET", "POST", "PUT", "DELETE", "OPTIONS"],
      allowHeaders: [
        "Authorization",
        "Content-Type",
        "Content-Digest",
        "Signature",
        "Signature-Input",
        REQUEST_ID_HEADER,
      ],
      exposeHeaders: [
        REQUEST_ID_HEADER,
        "Retry-After",
        "RateLimit",
        "RateLimit-Policy",
      ],
      maxAge: 600,
    })
    : undefined;
  // Every WebSocket upgrade on this port (/ws, /ws/agent, plugin links):
  // CORS does not cover them, so a foreign page is refused here.
  const originRefused = metrics.counter(
    "plexus_http_websocket_origin_refused_total",
    "WebSocket upgrades refused for a foreign Origin",
  );
  const refuseOrigin = upgradeOriginGuard({
    allowed: deps.corsOrigins,
    onRefused: () => originRefused.inc(),
  });
  const maxBody = deps.bodyLimitBytes ?? 1 << 20;
  const tooLarge = () =>
    errorResponse(413, `request body over ${maxBody} bytes`);
  const limitStream = bodyLimit({ maxSize: maxBody, onError: tooLarge });
  /** Answers an error where it was thrown, as Hono's compose does for a layer. */
  const failed = async (c: Context, err: unknown) => {
    if (!(err instanceof Error)) throw err;
    c.error = err;
    c.res = await onError(err, c);
  };
  // Both run in the request-id middleware's place of `next` (or as a layer
  // of their own after CORS, when CORS is on): each layer of Hono's chain
  // costs a call and a promise on every request. A refusal or an error is
  // set as the answer here, as Hono's compose would for a layer.
  const guard = (c: Context, next: Next): Promise<void> => {
    const refused = refuseOrigin(c.req.raw);
    if (refused) {
      c.res = refused;
      return Promise.resolve();
    }
    // A declared length is checked from the header alone, as Hono's
    // bodyLimit does, but without touching `req.body` first: that getter
    // turns a body Deno already holds whole into a stream read chunk by
    // chunk (`req.json()` then takes the slow path). A body without a
    // length (chunked) is still counted as it streams.
    const h = c.req.raw.headers;
    const length = h.get("content-length");
    if (length !== null && !h.has("transfer-encoding")) {
      if (parseInt(length, 10) > maxBody) {
        c.res = tooLarge();
        return Promise.resolve();
      }
      return next();
    }
    return limitStream(c, next).then((res) => {
      if (res && !c.finalized) c.res = res;
    }, (err) => failed(c, err));
  };
  const cors = corsLayer !== undefined;
  if (cors) app.use(corsLayer!, guard);

  const onError: ErrorHandler = (err, c) => {
    if (err instanceof HTTPException) {
      const res = err.getResponse();
      if (res.headers.get("content-type")?.includes("application/json")) {
        return res;
      }
      return c.json(
        errorBody(err.status, err.message || res.statusText),
        err.status,
      );
    }
    log.error("unhandled error", { error: err, path: c.req.path });
    return c.json(errorBody(500, "internal error"), 500);
  };
  const notFound: NotFoundHandler = (c) =>
    c.json(errorBody(404, `no route for ${c.req.method} ${c.req.path}`), 404);
  app.onError(onError);
  app.notFound(notFound);

  let cached: { at: number; report: HealthReport; body: string } | undefined;
  let inflight: Promise<{ report: HealthReport; body: string }> | undefined;
  const cacheMs = deps.healthCacheMs ?? 1000;
  const computeHealth = async (): Promise<HealthReport> => {
    const services: Record<string, ServiceHealth> = {};
    const t0 = performance.now();
    try {
      await kv.get(HEALTH_PROBE_KEY);
      services.kv = {
        name: "kv",
        status: "up",
        latency: +(performance.now() - t0).toFixed(2),
      };
    } catch (err) {
      services.kv = {
        name: "kv",
        status: "down",
        detail: (err as Error).message,
      };
    }
    Object.assign(services, await kernel.health());
    const pluginsDown = Object.values(services).some((s) =>
      s.status === "down"
    );
    const status = deps.draining() || services.kv.status === "down"
      ? "unhealthy"
      : pluginsDown
      ? "degraded"
      : "healthy";
    return {
      status,
      timestamp: new Date().toISOString(),
      version: node.version,
      nodeId: node.id,
      services,
    };
  };
  /** The cached report while fresh (and not draining), else undefined. */
  const freshHealth = () =>
    !deps.draining() && cached && performance.now() - cached.at < cacheMs
      ? cached
      : undefined;
  const health = async (): Promise<{ report: HealthReport; body: string }> => {
    const fresh = freshHealth();
    if (fresh) return fresh;
    // Concurrent probes share one computation; the body is serialized once.
    inflight ??= computeHealth().then((report) => ({
      report,
      body: JSON.stringify(report),
    }))
      .finally(() => (inflight = undefined));
    const r = await inflight;
    cached = { at: performance.now(), ...r };
    return r;
  };
  // Headers the full stack put on its last /health answer (secure headers,
  // CORS), replayed by the fast path so both answer alike.
  let healthHeaders: [string, string][] | undefined;
  // The cached answer as a Response, cloned per request: a clone copies the
  // header list without validating it again, where building a Response
  // validates every header (~4 µs against ~0.6 µs with 7 headers; 2-6 µs
  // less server CPU per /health request measured on Deno.serve).
  let template:
    | { r: object; base: [string, string][]; res: Response }
    | undefined;
  const healthResponse = (
    r: { report: HealthReport; body: string },
    id: string,
    base: [string, string][],
  ) => {
    if (template?.r !== r || template.base !== base) {
      template = {
        r,
        base,
        res: new Response(r.body, {
          status: r.report.status === "unhealthy" ? 503 : 200,
          headers: base,
        }),
      };
    }
    const res = template.res.clone();
    res.headers.set(REQUEST_ID_HEADER, id);
    return res;
  };

  app.get("/health", async (c) => {
    const r = await health();
    return c.body(r.body, r.report.status === "unhealthy" ? 503 : 200, {
      "content-type": "application/json",
    });
  });

  app.get("/metrics", (c) => {
    if (c.req.header("accept")?.includes("application/json")) {
      return c.json(metricsJson(deps));
    }
    return c.body(metrics.render(), 200, {
      "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
    });
  });

  app.get("/stats", (c) => {
    const s = logStream.stats();
    return c.json({
      clients: s.clients,
      bufferSize: s.bufferSize,
      uptime: s.uptime,
    });
  });

  if (security.limits) {
    app.use(
      "/ws",
      websocketHandshakeLimit({ limiter: security.limits.wsHandshake }),
    );
  }
  app.get("/ws", async (c) => {
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      return errorResponse(
        426,
        "GET /ws needs a WebSocket upgrade",
        undefined,
        { Upgrade: "websocket" },
      );
    }
    if (deps.draining()) return errorResponse(503, "node is shutting down");
    // Browsers cannot set headers on a WebSocket: `?access_token=` also works.
    const queryToken = c.req.query("access_token");
    const credentials = c.req.header("authorization") ??
      (queryToken === undefined ? undefined : `Bearer ${queryToken}`);
    let expiresAt: number | undefined;
    if (credentials !== undefined || security.logStream === "token") {
      if (credentials === undefined) return unauthorized();
      const r = await security.auth.authenticate(
        new Request(c.req.url, { headers: { authorization: credentials } }),
      );
      if (!r.ok) {
        log.warn("authentication refused", {
          method: r.failure.method,
          reason: r.failure.reason,
          detail: r.failure.detail,
          path: c.req.path,
        });
        return unauthorized();
      }
      expiresAt = r.principal.exp;
    }
    const { socket, response } = Deno.upgradeWebSocket(c.req.raw, {
      idleTimeout: 0,
    });
    // ?batch=1: a burst of messages in one frame, one per line.
    logStream.attach(socket, { batch: c.req.query("batch") === "1" });
    if (expiresAt !== undefined) endAtExpiry(socket, credentials!);
    return response;
  });

  /**
   * A token-authenticated socket ends when its token does: closed with 4001
   * at `exp` (plus nothing: leeway is for clock skew between machines, not
   * for this node's own timer), and re-verified every 30 s so a revoked
   * token ends it too.
   */
  const endAtExpiry = (socket: WebSocket, credentials: string) => {
    const req = new Request("http://node/ws", {
      headers: { authorization: credentials },
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    let check: ReturnType<typeof setInterval> | undefined;
    const end = (why: string) => {
      clearTimeout(timer);
      clearInterval(check);
      if (socket.readyState === WebSocket.OPEN) socket.close(4001, why);
    };
    const schedule = async () => {
      const r = await security.auth.authenticate(req);
      if (!r.ok || r.principal.exp === undefined) return end("token expired");
      clearTimeout(timer);
      const ms = r.principal.exp * 1000 - Date.now();
      timer = setTimeout(() => end("token expired"), Math.max(0, ms));
    };
    socket.addEventListener("open", () => {
      schedule().catch(() => end("token check failed"));
      check = setInterval(
        () => schedule().catch(() => end("token check failed")),
        30_000,
      );
    }, { once: true });
    socket.addEventListener("close", () => {
      clearTimeout(timer);
      clearInterval(check);
    }, { once: true });
  };

  // Plugin WebSocket routes (ctx.websocket): the same handshake limit,
  // origin check (above) and drain refusal as /ws; the plugin authenticates.
  if (security.limits) {
    app.use(
      "/ws/:name",
      websocketHandshakeLimit({ limiter: security.limits.wsHandshake }),
    );
  }
  app.get("/ws/:name", async (c) => {
    const name = c.req.param("name");
    const handler = kernel.websocketFor(name);
    if (!handler) {
      return errorResponse(404, `no running plugin serves /ws/${name}`);
    }
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      return errorResponse(
        426,
        `GET /ws/${name} needs a WebSocket upgrade`,
        undefined,
        { Upgrade: "websocket" },
      );
    }
    if (deps.draining()) return errorResponse(503, "node is shutting down");
    try {
      return await handler(c.req.raw);
    } catch (err) {
      if (err instanceof PlexusError) return plexusErrorResponse(err);
      throw err;
    }
  });

  // An anonymous prompt (no credentials at all) goes to the prompt plugin's
  // public route, when its operator turned that on (it then serves POST
  // /plugins/prompts/send); anything carrying credentials is authenticated.
  const anonymousPrompt = (c: Context): Promise<Response> | undefined => {
    const h = c.req.raw.headers;
    if (
      h.has("authorization") || h.has("signature") ||
      h.has("signature-input") || h.has("cookie")
    ) return undefined;
    const sub = kernel.httpFor("prompts");
    const path = "/plugins/prompts/send";
    // Only a POST route of its own (not middleware) makes it open.
    const served = sub?.router.match("POST", path)[0].some(([[, route]]) =>
      route.method === "POST"
    );
    if (!sub || !served) return undefined;
    const url = new URL(c.req.url);
    url.pathname = path;
    pluginRoutes.set(c.req.raw, SEND_PROMPT);
    return Promise.resolve(
      jsonErrors(sub).fetch(new Request(url, c.req.raw)),
    );
  };

  // /api/v1 (and /send/prompt, the seed's alias of /api/v1/prompts): the
  // per-IP limit first (cheap, before any signature is checked), then audit
  // (so refused calls are recorded too), response signing, authentication,
  // then the per-principal limit. One middleware runs them all: each layer
  // of Hono's chain costs an async call and a promise per request. A step
  // that throws is answered by onError where it stands, as Hono's compose
  // answers a layer, so the steps around it (audit, headers) see the 500.
  const ipLimit = security.limits
    ? rateLimitCheck({
      limiters: [{ limiter: security.limits.ip, key: clientIp }],
    })
    : undefined;
  const principalLimit = security.limits
    ? rateLimitCheck({
      limiters: [{
        limiter: security.limits.principal,
        key: (c) => principalOf(c)?.sub,
      }],
    })
    : undefined;
  const auth = authCheck(security.auth, { log, metrics });
  /** Authentication, the per-principal limit and the route; never throws an Error. */
  const admitted = async (c: Context, next: Next, anonymous: boolean) => {
    try {
      const open = anonymous ? anonymousPrompt(c) : undefined;
      if (open) {
        c.res = await open;
        return;
      }
      const principal = await auth.admit(c);
      if (principal instanceof Response) {
        c.res = principal;
        return;
      }
      try {
        const checked = await principalLimit?.check(c);
        if (checked instanceof Response) c.res = checked;
        else {
          await next();
          if (checked) principalLimit!.annotate(c, checked);
        }
      } catch (err) {
        await failed(c, err);
      }
      auth.annotate(c, principal);
    } catch (err) {
      await failed(c, err);
    }
  };
  const signed = async (c: Context, next: Next, anonymous: boolean) => {
    await admitted(c, next, anonymous);
    if (!security.signResponses || !c.req.raw.headers.has("accept-signature")) {
      return;
    }
    try {
      // Only a signed answer is set again: Hono's `c.res` setter builds a
      // new Response and copies every header onto it.
      const res = await maybeSignResponse(security, c.req.raw, c.res);
      if (res !== c.res) c.res = res;
    } catch (err) {
      await failed(c, err);
    }
  };
  const audits: AuditMiddleware[] = [];
  for (const path of ["/api/v1/*", SEND_PROMPT]) {
    const audit = auditLog({
      kv,
      log,
      onError: (err) => log.warn("audit record not stored", { error: err }),
    });
    audits.push(audit);
    const anonymous = path === SEND_PROMPT;
    app.use(path, async (c, next) => {
      let checked;
      if (ipLimit) {
        try {
          checked = await ipLimit.check(c);
        } catch (err) {
          return await failed(c, err);
        }
        if (checked instanceof Response) {
          c.res = checked;
          return;
        }
      }
      await audit(c, () => signed(c, next, anonymous));
      if (checked) ipLimit!.annotate(c, checked);
    });
  }

  app.get(
    "/api/v1/plugins",
    requirePermission("plugins:read"),
    (c) =>
      c.json(
        kernel.list().map((
          { name, version, kind, provides, status, trust, permissions },
        ) => {
          // A sandboxed plugin's Worker restarts after a crash: how often.
          const sandbox = deps.sandboxOf?.(name);
          return {
            name,
            version,
            kind,
            provides,
            status,
            trust,
            permissions,
            ...(sandbox
              ? {
                restarts: Math.max(0, sandbox.starts - 1),
                crashes: sandbox.crashes.length,
              }
              : {}),
          };
        }),
      ),
  );

  if (deps.reload) {
    const reload = deps.reload;
    app.post(
      "/api/v1/plugins/:name/reload",
      requirePermission("admin"),
      async (c) => {
        const name = c.req.param("name");
        try {
          return c.json(await reload(name));
        } catch (err) {
          if (!(err instanceof PluginError)) throw err;
          log.warn("plugin reload refused", { plugin: name, error: err });
          const status = err.phase !== "swap"
            ? 422
            : /^no plugin named/.test(err.message)
            ? 404
            : 409;
          return errorResponse(
            status,
            err.message,
            status === 422 ? "plugin_refused" : undefined,
          );
        }
      },
    );
  }

  app.get("/api/v1/cluster", requirePermission("cluster:read"), async (c) => {
    const consensus = kernel.has("consensus:*")
      ? kernel.get("consensus:*")
      : undefined;
    // A consensus plugin's own view of membership wins; else the registry's heartbeats.
    const members = consensus
      ? await consensus.members()
      : await deps.registry?.members() ?? [];
    return c.json(clusterView({ nodeId: node.id, consensus, members }));
  });

  // This node's own version and load, for members that do not share its
  // KV (the console's cluster view reads it from each of them).
  app.get("/api/v1/cluster/self", requirePermission("cluster:read"), (c) => {
    if (!deps.registry) {
      return c.json(errorBody(404, "this node keeps no registry"), 404);
    }
    return c.json(deps.registry.self());
  });

  if (deps.tasks) {
    app.route("/api/v1/tasks", taskRoutes(deps.tasks));
    app.route("/api/v1/cluster/tasks", clusterTaskRoutes(deps.tasks));
  }
  app.route("/api/v1/services", serviceRoutes(kernel.services));
  app.route("/api/v1", securityRoutes(security, kv));
  // Plugin apps answer errors and unknown paths in the node's JSON shape.
  const withHandlers = new WeakSet<object>();
  const jsonErrors = <E extends Env>(sub: Hono<E>): Hono<E> => {
    if (!withHandlers.has(sub)) {
      sub.onError(onError).notFound(notFound);
      withHandlers.add(sub);
    }
    return sub;
  };
  // Plugin routes under /api/v1 (ctx.api), after the core ones and behind
  // the whole chain above; the plugin's app gets the verified principal.
  app.all("/api/v1/:prefix/*", async (c) => {
    const prefix = c.req.param("prefix");
    const sub = kernel.apiFor(prefix);
    if (!sub) {
      pluginRoutes.set(c.req.raw, "unmatched");
      return notFound(c);
    }
    // The plugin's app tells which of its routes answered (ApiEnv.route).
    const env: ApiEnv["Bindings"] = { principal: principalOf(c) };
    const res = await jsonErrors(sub).fetch(c.req.raw, env);
    pluginRoutes.set(
      c.req.raw,
      env.route ?? pluginRoute(sub, c.req.method, c.req.path) ??
        `/api/v1/${prefix}/*`,
    );
    return res;
  });

  // The seed's prompt endpoint: the plugin that claimed /api/v1/prompts
  // answers it, behind the same chain as the API.
  app.post(SEND_PROMPT, (c) => {
    const sub = kernel.apiFor("prompts");
    if (!sub) {
      return errorResponse(
        404,
        `no running plugin serves ${SEND_PROMPT} (it needs one that claims /api/v1/prompts, e.g. builtin:prompts)`,
      );
    }
    // The same request, routed as /api/v1/prompts: no copy of it.
    return jsonErrors(sub).fetch(c.req.raw, {
      principal: principalOf(c),
      path: "/api/v1/prompts",
    });
  });

  // The operator's console (plugins/dashboard) at / and /ui/*: its app
  // serves them under /plugins/dashboard/ui/*.
  // Sign-in writes a KV record per attempt: the per-IP limit guards it.
  if (security.limits) {
    app.use(
      "/ui/auth/*",
      rateLimit({ limiters: [{ limiter: security.limits.ip, key: clientIp }] }),
    );
  }
  const toDashboard = (c: Context, path: string) => {
    const sub = kernel.httpFor(DASHBOARD_PLUGIN);
    if (!sub) return notFound(c);
    const url = new URL(c.req.url);
    url.pathname = `/plugins/${DASHBOARD_PLUGIN}${path}`;
    pluginRoutes.set(
      c.req.raw,
      c.req.path === "/" ? "/" : pluginRoute(sub, c.req.method, url.pathname)
        ?.replace(`/plugins/${DASHBOARD_PLUGIN}`, "") ?? "/ui/*",
    );
    return jsonErrors(sub).fetch(new Request(url, c.req.raw));
  };
  // `/` is the console itself (its sign-in page until signed in).
  app.get("/", (c) => toDashboard(c, "/ui/"));
  app.all("/ui/*", (c) => toDashboard(c, c.req.path));

  app.all("/plugins/:name/*", (c) => {
    const sub = kernel.httpFor(c.req.param("name"));
    if (!sub) {
      return errorResponse(
        404,
        `no running plugin '${c.req.param("name")}' serves routes`,
      );
    }
    pluginRoutes.set(
      c.req.raw,
      pluginRoute(sub, c.req.method, c.req.path) ??
        `/plugins/${c.req.param("name")}/*`,
    );
    return jsonErrors(sub).fetch(c.req.raw);
  });

  // The cached health answer, without the app (bench/http_health.ts).
  const healthAnswer = (
    fresh: Parameters<typeof healthResponse>[0],
    id: string,
    headers: [string, string][],
  ) => {
    const t0 = performance.now();
    const res = healthResponse(fresh, id, headers);
    finish(
      id,
      "GET",
      "/health",
      "/health",
      res.status,
      (performance.now() - t0) / 1000,
    );
    return res;
  };
  const fetch: HttpApp["fetch"] = (req, info) => {
    if (req.method === "GET") {
      // The path without parsing the whole URL: after "scheme://host".
      const url = req.url;
      const start = url.indexOf("/", url.indexOf("//") + 2);
      const q = url.indexOf("?", start);
      if ((q < 0 ? url.slice(start) : url.slice(start, q)) === "/health") {
        const fresh = freshHealth();
        if (fresh && healthHeaders && !req.headers.has("origin")) {
          const cached = healthHeaders;
          if (!otelEnabled) return healthAnswer(fresh, requestId(req), cached);
          // The cached answer is traced like the middleware's (same span).
          return serverSpan(req, (s) => {
            const id = givenId(req) ?? s!.spanContext().traceId;
            const res = healthAnswer(fresh, id, cached);
            s!.updateName("GET /health");
            s!.setAttributes({
              "http.route": "/health",
              "url.path": "/health",
              "http.response.status_code": res.status,
            });
            return res;
          });
        }
        return Promise.resolve(app.fetch(req, info)).then((res) => {
          if (!req.headers.has("origin")) {
            healthHeaders = [...res.headers].filter(([k]) =>
              !["x-request-id", "content-length", "date"].includes(k)
            );
          }
          return res;
        });
      }
    }
    return app.fetch(req, info);
  };
  const drainAudit = async () => {
    await Promise.all(audits.map((a) => a.drain()));
  };
  return { app, fetch, drainAudit };
}

/**
 * The route label of a plugin request: the pattern of the plugin's route that
 * matches (`/plugins/hello/greet/:name`), so series stay bounded by the
 * routes plugins declare. A concrete method's route wins over middleware
 * and `all()` (the last of those is the fallback); nothing matched is
 * undefined (the caller labels it `/plugins/{name}/*` or `/api/v1/{prefix}/*`).
 */
function pluginRoute<E extends Env>(
  sub: Hono<E>,
  method: string,
  path: string,
): string | undefined {
  const [matched] = sub.router.match(method === "HEAD" ? "GET" : method, path);
  let fallback: string | undefined;
  for (const [[, route]] of matched) {
    if (route.method !== "ALL") return route.path;
    fallback = route.path;
  }
  return fallback;
}

/** The JSON form of `/metrics` (the seed's `http_metrics`/`websocket_stats` shape). */
function metricsJson(deps: AppDeps) {
  const all = deps.metrics.toJSON() as Record<
    string,
    { series: { labels: string; value: unknown }[] }
  >;
  const byStatus: Record<string, number> = {};
  const byRoute: Record<string, number> = {};
  let total = 0;
  for (const s of all.plexus_http_requests_total?.series ?? []) {
    const n = s.value as number;
    total += n;
    const status = /status="(\d+)"/.exec(s.labels)?.[1] ?? "?";
    const route = /route="([^"]*)"/.exec(s.labels)?.[1] ?? "?";
    byStatus[status] = (byStatus[status] ?? 0) + n;
    byRoute[route] = (byRoute[route] ?? 0) + n;
  }
  let count = 0;
  let sum = 0;
  for (const s of all.plexus_http_request_duration_seconds?.series ?? []) {
    const v = s.value as { count: number; sum: number };
    count += v.count;
    sum += v.sum;
  }
  const ls = deps.logStream.stats();
  const mem = Deno.memoryUsage();
  return {
    http_metrics: {
      total_requests: total,
      requests_by_status: byStatus,
      requests_by_route: byRoute,
      average_response_time_ms: count ? +((sum / count) * 1000).toFixed(3) : 0,
    },
    websocket_stats: {
      active_connections: ls.clients,
      buffer_size: ls.bufferSize,
      messages_published: ls.published,
      slow_consumers_closed: ls.slowConsumersClosed,
    },
    process: {
      rss: mem.rss,
      heap_used: mem.heapUsed,
      heap_total: mem.heapTotal,
      uptime_seconds: ls.uptime,
    },
    plugins: deps.kernel.list().map(({ name, status }) => ({ name, status })),
  };
}
