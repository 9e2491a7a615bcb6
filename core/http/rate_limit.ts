/**
 * Rate limiting for the HTTP API and WebSocket handshakes, on the shared GCRA
 * limiters of `core/security/rate_limit.ts`.
 *
 * Every checked limiter is advertised with the structured-field headers of
 * the IETF draft (draft-ietf-httpapi-ratelimit-headers-10), one list member
 * per limiter, named by its policy name:
 *
 * ```
 * RateLimit-Policy: "ip";q=20;w=2, "principal";q=100;w=60
 * RateLimit: "ip";r=19;t=1, "principal";r=99;t=1
 * ```
 *
 * `q` is the burst and `w` the seconds a full burst takes to refill
 * (`burst × periodMs / rate`, rounded up), so a client that sends `q` per `w`
 * is never refused; `r` is what is left now and `t` the seconds (rounded up)
 * until the full burst is back. These two fields replace the older
 * `RateLimit-Limit`/`-Remaining`/`-Reset` trio, which can describe only one
 * limit per response; here a request passes a per-IP and a per-principal limit
 * at once. A refusal is 429 with the JSON error shape
 * (`{"error":{"code":"rate_limited","message"}}`) and `Retry-After` in whole
 * seconds, rounded up, so a client that waits that long is admitted.
 *
 * Limiters are checked in order and a refusal stops the chain; the limiters
 * already passed have spent their cost (as with nginx's several `limit_req`).
 * Put the cheap per-IP limit first, before authentication, so floods are cut
 * before any signature is verified.
 *
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";
import type { RateLimitDecision, RateLimiter } from "../security/rate_limit.ts";
import { errorResponse } from "./errors.ts";

/** One limiter and what it counts requests by. */
export interface RateLimitRule {
  limiter: RateLimiter;
  /**
   * The id to count the request against (an IP, a principal); `undefined`
   * skips this limiter for the request.
   */
  key: (c: Context) => string | undefined | Promise<string | undefined>;
  /**
   * Policy name in the headers and messages: letters, digits, `.`, `_`, `-`,
   * `:` or `/`, 1-64 characters. @default {limiter.policy.scope}
   */
  name?: string;
  /** The cost of the request. @default {1} */
  cost?: (c: Context) => number;
}

/** Options for {@linkcode rateLimit}. */
export interface RateLimitMiddlewareOptions {
  /** Limiters to pass, in order. */
  limiters: RateLimitRule[];
  /** Also send `RateLimit-Policy`/`RateLimit` on admitted responses. @default {true} */
  headersOnSuccess?: boolean;
  /** Called for each refusal, e.g. to count it in metrics. */
  onLimited?: (c: Context, refusal: RateLimitRefusal) => void;
}

/** Which limiter refused a request, and why. */
export interface RateLimitRefusal {
  /** The policy name. */
  name: string;
  /** The id the request was counted against. */
  id: string;
  decision: RateLimitDecision;
}

/** Options for {@linkcode websocketHandshakeLimit}. */
export interface HandshakeLimitOptions {
  /** The handshake limiter; give it its own scope (e.g. `"ws-handshake"`). */
  limiter: RateLimiter;
  /** The id to count a handshake against. @default {clientIp} */
  key?: (c: Context) => string | undefined | Promise<string | undefined>;
  /** Policy name in the headers. @default {limiter.policy.scope} */
  name?: string;
  /** Called for each refused handshake. */
  onLimited?: (c: Context, refusal: RateLimitRefusal) => void;
}

const NAME_RE = /^[A-Za-z0-9._:/-]{1,64}$/;

interface Rule {
  limiter: RateLimiter;
  key: RateLimitRule["key"];
  cost?: RateLimitRule["cost"];
  name: string;
  policyItem: string;
}

function compile(rule: RateLimitRule, op: string): Rule {
  if (
    typeof rule !== "object" || rule === null ||
    typeof rule.limiter?.check !== "function" || typeof rule.key !== "function"
  ) {
    throw new TypeError(
      `Cannot ${op}: each limiter must be {limiter, key: (c) => string | undefined}`,
    );
  }
  const policy = rule.limiter.policy;
  const name = rule.name ?? policy.scope;
  if (!NAME_RE.test(name)) {
    throw new RangeError(
      `Cannot ${op}: policy name must be 1-64 of A-Z a-z 0-9 . _ : / -, got '${name}'`,
    );
  }
  if (rule.cost !== undefined && typeof rule.cost !== "function") {
    throw new TypeError(`Cannot ${op}: cost of '${name}' must be a function`);
  }
  const windowS = Math.max(
    1,
    Math.ceil((policy.burst * policy.emissionIntervalMs) / 1000),
  );
  return {
    limiter: rule.limiter,
    key: rule.key,
    cost: rule.cost,
    name,
    policyItem: `"${name}";q=${policy.burst};w=${windowS}`,
  };
}

function compileAll(rules: unknown, op: string): Rule[] {
  if (!Array.isArray(rules) || rules.length === 0) {
    throw new TypeError(
      `Cannot ${op}: limiters must be a non-empty array, got ${
        Array.isArray(rules) ? "[]" : String(rules)
      }`,
    );
  }
  const compiled = rules.map((r) => compile(r, op));
  const names = new Set<string>();
  for (const r of compiled) {
    if (names.has(r.name)) {
      throw new RangeError(
        `Cannot ${op}: policy name '${r.name}' is used twice; give each limiter its own name`,
      );
    }
    names.add(r.name);
  }
  return compiled;
}

interface Checked {
  rule: Rule;
  decision: RateLimitDecision;
}

/** The `RateLimit-Policy` and `RateLimit` values for the limiters checked. */
function headerValues(checked: Checked[]): [string, string] {
  return [
    checked.map((x) => x.rule.policyItem).join(", "),
    checked.map(({ rule, decision }) =>
      `"${rule.name}";r=${Math.max(0, decision.remaining)};t=${
        Math.ceil(decision.resetMs / 1000)
      }`
    ).join(", "),
  ];
}

/** Retry-After in whole seconds, rounded up (at least 1). */
function retryAfterSeconds(decision: RateLimitDecision): number {
  return Math.max(1, Math.ceil(decision.retryAfterMs / 1000));
}

function limitedResponse(checked: Checked[], refusal: Checked): Response {
  const [policy, state] = headerValues(checked);
  const seconds = retryAfterSeconds(refusal.decision);
  return errorResponse(
    429,
    `rate limit '${refusal.rule.name}' exceeded; retry in ${seconds} s`,
    undefined,
    {
      "Retry-After": String(seconds),
      "RateLimit-Policy": policy,
      "RateLimit": state,
    },
  );
}

/** Reports a refusal to `onLimited` and answers it with 429. */
function refuse(
  c: Context,
  onLimited: ((c: Context, refusal: RateLimitRefusal) => void) | undefined,
  checked: Checked[],
  refused: Checked,
  id: string,
): Response {
  onLimited?.(c, { name: refused.rule.name, id, decision: refused.decision });
  return limitedResponse(checked, refused);
}

/** Checks `rules` in order; stops at the first refusal. */
async function checkAll(
  rules: Rule[],
  c: Context,
): Promise<{ checked: Checked[]; refused?: Checked; id?: string }> {
  const checked: Checked[] = [];
  for (const rule of rules) {
    const id = await rule.key(c);
    if (id === undefined) continue;
    const decision = await rule.limiter.check(id, rule.cost?.(c) ?? 1);
    const entry = { rule, decision };
    checked.push(entry);
    if (!decision.allowed) return { checked, refused: entry, id };
  }
  return { checked };
}

/**
 * The socket address of the client, as a rate-limit id: IPv4 as is, IPv6
 * cut to its /64 (one subscriber usually holds a whole /64), IPv4-mapped IPv6
 * as IPv4. Reads `c.env.remoteAddr`, which is there when the app is served
 * with `Deno.serve((req, info) => app.fetch(req, info))`; `undefined`
 * otherwise (the limiter is then skipped). Behind a reverse proxy this is the
 * proxy's address: give a `key` that reads the proxy's trusted header instead.
 *
 * @example Usage
 * ```ts
 * import { Hono } from "hono";
 * import { clientIp } from "./rate_limit.ts";
 * const app = new Hono().get("/", (c) => c.text(clientIp(c) ?? "?"));
 * const env = { remoteAddr: { hostname: "2001:db8:1:2:3:4:5:6", port: 1, transport: "tcp" } };
 * await (await app.request("/", {}, env)).text(); // "2001:db8:1:2::/64"
 * ```
 */
export function clientIp(c: Context): string | undefined {
  const addr = (c.env as { remoteAddr?: { hostname?: unknown } } | undefined)
    ?.remoteAddr?.hostname;
  return typeof addr === "string" && addr.length > 0 ? ipKey(addr) : undefined;
}

/**
 * Normalizes an IP address into a rate-limit id (see {@linkcode clientIp}).
 * A string that is not an IP address comes back unchanged.
 *
 * @example Usage
 * ```ts
 * import { ipKey } from "./rate_limit.ts";
 * ipKey("203.0.113.9"); // "203.0.113.9"
 * ipKey("::ffff:203.0.113.9"); // "203.0.113.9"
 * ipKey("[2001:DB8::1]"); // "2001:db8:0:0::/64"
 * ```
 */
export function ipKey(address: string): string {
  let a = address.startsWith("[") && address.endsWith("]")
    ? address.slice(1, -1)
    : address;
  if (!a.includes(":")) return a;
  const zone = a.indexOf("%");
  if (zone >= 0) a = a.slice(0, zone);
  const h = expandIpv6(a);
  if (!h) return address;
  if (h.slice(0, 5).every((x) => x === "0") && h[5] === "ffff") {
    const [hi, lo] = [parseInt(h[6], 16), parseInt(h[7], 16)];
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return `${h.slice(0, 4).join(":")}::/64`;
}

/** The eight hextets of an IPv6 address (lowercase, no leading zeros), or null. */
function expandIpv6(a: string): string[] | null {
  const parts = a.split("::");
  if (parts.length > 2) return null;
  const side = (s: string) => {
    if (s === "") return [];
    const out: string[] = [];
    const items = s.split(":");
    for (let i = 0; i < items.length; i++) {
      const h = items[i];
      if (i === items.length - 1 && h.includes(".")) {
        const v4 = h.split(".").map(Number);
        if (
          v4.length !== 4 ||
          v4.some((n) => !Number.isInteger(n) || n < 0 || n > 255)
        ) return null;
        out.push(
          ((v4[0] << 8) | v4[1]).toString(16),
          ((v4[2] << 8) | v4[3]).toString(16),
        );
      } else if (/^[0-9a-f]{1,4}$/i.test(h)) {
        out.push(parseInt(h, 16).toString(16));
      } else return null;
    }
    return out;
  };
  const head = side(parts[0]);
  const tail = parts.length === 2 ? side(parts[1]) : [];
  if (!head || !tail) return null;
  if (parts.length === 1) return head.length === 8 ? head : null;
  const missing = 8 - head.length - tail.length;
  if (missing < 1) return null;
  return [...head, ...Array(missing).fill("0"), ...tail];
}

/**
 * Middleware that passes each request through `limiters` in order and
 * answers 429 (JSON error, `Retry-After`, `RateLimit-Policy`, `RateLimit`)
 * at the first refusal. Admitted responses carry the same RateLimit headers
 * unless `headersOnSuccess` is false. Errors from a limiter (KV down) go to
 * the app's error handler.
 *
 * @example Usage
 * ```ts
 * import { Hono } from "hono";
 * import { createRateLimiter } from "../security/rate_limit.ts";
 * import { clientIp, rateLimit } from "./rate_limit.ts";
 * const kv = await Deno.openKv(":memory:");
 * const perIp = createRateLimiter(kv, { scope: "ip", rate: 1, periodMs: 60_000, burst: 1 });
 * const app = new Hono()
 *   .use(rateLimit({ limiters: [{ limiter: perIp, key: clientIp }] }))
 *   .get("/", (c) => c.text("ok"));
 * const env = { remoteAddr: { hostname: "203.0.113.9", port: 1, transport: "tcp" } };
 * (await app.request("/", {}, env)).status; // 200
 * const res = await app.request("/", {}, env);
 * res.status; // 429
 * res.headers.get("Retry-After"); // "60"
 * res.headers.get("RateLimit"); // '"ip";r=0;t=60'
 * kv.close();
 * ```
 */
export function rateLimit(
  options: RateLimitMiddlewareOptions,
): MiddlewareHandler {
  const limits = rateLimitCheck(options, "create rate limit middleware");
  return async (c, next) => {
    const refusal = await limits.check(c);
    if (refusal instanceof Response) return refusal;
    await next();
    limits.annotate(c, refusal);
  };
}

/**
 * The two halves of {@linkcode rateLimit}, for a handler that runs its own
 * chain (the node's `/api/v1` one) instead of a middleware layer: `check`
 * spends the request's cost and gives the 429 to answer, or what it
 * checked; `annotate` adds the RateLimit headers to `c.res` once answered.
 */
export interface RateLimitCheck {
  /** The 429 to answer, or the limiters checked (for `annotate`). */
  check(c: Context): Promise<Response | RateLimitChecked>;
  /** Adds the `RateLimit-Policy`/`RateLimit` headers of `checked` to `c.res`. */
  annotate(c: Context, checked: RateLimitChecked): void;
}

/** What {@linkcode RateLimitCheck.check} checked, opaque to callers. */
export type RateLimitChecked = { readonly checked: unknown };

/**
 * Builds {@linkcode rateLimit}'s checks without the middleware around them.
 *
 * @example Usage
 * ```ts
 * import { Hono } from "hono";
 * import { createRateLimiter } from "../security/rate_limit.ts";
 * import { clientIp, rateLimitCheck } from "./rate_limit.ts";
 * import assert from "node:assert/strict";
 * const kv = await Deno.openKv(":memory:");
 * const perIp = createRateLimiter(kv, { scope: "ip", rate: 1, periodMs: 60_000, burst: 1 });
 * const limits = rateLimitCheck({ limiters: [{ limiter: perIp, key: clientIp }] });
 * const app = new Hono().get("/", async (c) => {
 *   const r = await limits.check(c);
 *   if (r instanceof Response) return r;
 *   c.res = c.text("ok");
 *   limits.annotate(c, r);
 *   return c.res;
 * });
 * const env = { remoteAddr: { hostname: "203.0.113.9", port: 1, transport: "tcp" } };
 * assert.equal((await app.request("/", {}, env)).headers.get("RateLimit"), '"ip";r=0;t=60');
 * assert.equal((await app.request("/", {}, env)).status, 429);
 * kv.close();
 * ```
 */
export function rateLimitCheck(
  options: RateLimitMiddlewareOptions,
  op = "create rate limit check",
): RateLimitCheck {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`Cannot ${op}: options must be an object`);
  }
  const rules = compileAll(options.limiters, op);
  const headersOnSuccess = options.headersOnSuccess ?? true;
  return {
    async check(c) {
      const result = await checkAll(rules, c);
      const { checked, refused, id } = result;
      if (refused) return refuse(c, options.onLimited, checked, refused, id!);
      return result;
    },
    annotate(c, result) {
      const { checked } = result as { checked: Checked[] };
      if (!headersOnSuccess || checked.length === 0) return;
      const [policy, state] = headerValues(checked);
      // An inner limiter (e.g. per principal) may have set its members
      // already, on a refusal or an admitted answer: list ours first, keep its.
      const join = (name: string, ours: string) => {
        const inner = c.res.headers.get(name);
        return inner ? `${ours}, ${inner}` : ours;
      };
      const p = join("RateLimit-Policy", policy);
      const r = join("RateLimit", state);
      try {
        c.res.headers.set("RateLimit-Policy", p);
        c.res.headers.set("RateLimit", r);
      } catch {
        // Immutable headers (e.g. a fetched response): let Hono copy it.
        c.header("RateLimit-Policy", p);
        c.header("RateLimit", r);
      }
    },
  };
}

/**
 * Checks one WebSocket handshake of `id` against `limiter`, for gateways not
 * written as Hono middleware: `null` means go ahead and upgrade, otherwise
 * answer with the returned 429.
 *
 * @example Usage
 * ```ts
 * import { createRateLimiter } from "../security/rate_limit.ts";
 * import { limitHandshake } from "./rate_limit.ts";
 * const kv = await Deno.openKv(":memory:");
 * const handshakes = createRateLimiter(kv, { scope: "ws-handshake", rate: 1, periodMs: 10_000, burst: 1 });
 * await limitHandshake(handshakes, "203.0.113.9"); // null
 * (await limitHandshake(handshakes, "203.0.113.9"))?.status; // 429
 * kv.close();
 * ```
 */
export async function limitHandshake(
  limiter: RateLimiter,
  id: string,
  options: { name?: string } = {},
): Promise<Response | null> {
  const rule = compile(
    { limiter, key: () => id, name: options.name },
    "limit handshake",
  );
  const decision = await limiter.check(id);
  if (decision.allowed) return null;
  const entry = { rule, decision };
  return limitedResponse([entry], entry);
}

/**
 * Middleware for WebSocket routes: a request carrying `Upgrade: websocket`
 * spends one handshake from `limiter` (per client IP by default) before the
 * upgrade, and is answered 429 when none is left. Other requests pass
 * untouched, and the 101 response is left as it is.
 *
 * @example Usage
 * ```ts
 * import { Hono } from "hono";
 * import { createRateLimiter } from "../security/rate_limit.ts";
 * import { websocketHandshakeLimit } from "./rate_limit.ts";
 * const kv = await Deno.openKv(":memory:");
 * const limiter = createRateLimiter(kv, { scope: "ws-handshake", rate: 1, periodMs: 10_000, burst: 1 });
 * const app = new Hono()
 *   .use("/ws/*", websocketHandshakeLimit({ limiter }))
 *   .get("/ws/agent", (c) => c.text("would upgrade"));
 * const init = { headers: { upgrade: "websocket" } };
 * const env = { remoteAddr: { hostname: "203.0.113.9", port: 1, transport: "tcp" } };
 * (await app.request("/ws/agent", init, env)).status; // 200
 * (await app.request("/ws/agent", init, env)).status; // 429
 * kv.close();
 * ```
 */
export function websocketHandshakeLimit(
  options: HandshakeLimitOptions,
): MiddlewareHandler {
  const op = "create WebSocket handshake limit";
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`Cannot ${op}: options must be an object`);
  }
  const rules = compileAll([{
    limiter: options.limiter,
    key: options.key ?? clientIp,
    name: options.name,
  }], op);
  return async (c, next) => {
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") return next();
    const { checked, refused, id } = await checkAll(rules, c);
    if (refused) return refuse(c, options.onLimited, checked, refused, id!);
    return next();
  };
}
