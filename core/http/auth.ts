/**
 * Who is calling: every `/api/v1/*` request proves a principal with either
 *
 * - `Authorization: Bearer <JWT>`: a token issued by any node of the cluster
 *   (`plexus token`), EdDSA only, verified against the node keys in the
 *   keyring, with `exp`/`iat`/`iss`/`aud`/`sub`/`jti` required and revoked
 *   `jti`s refused; or
 * - an RFC 9421 HTTP message signature (`Signature-Input` + `Signature`)
 *   made with an enrolled key (Ed25519 or HMAC-SHA256) or a node key,
 *   covering at least `@method`, `@authority`, `@path`, `@query` and, when
 *   there is a body, a matching `Content-Digest`; `created` no older than
 *   `maxAgeSec`; a `nonce` never seen before (kept in KV); or
 * - a dashboard session cookie (`core/http/session.ts`), with the session's
 *   CSRF token in `X-CSRF-Token` on every state-changing call (a missing or
 *   wrong one is 403, not 401: the person is known, the request is not
 *   theirs).
 *
 * Every failure, whatever the cause (unknown key, bad signature, expired,
 * revoked, replayed, malformed, missing), is the same 401 with the same body
 * and headers: no oracle. The cause goes to the log and the
 * `plexus_auth_total` metric. Then {@linkcode requirePermission} checks the
 * principal's role against the permission table (403).
 *
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";
import type { Clock } from "../clock.ts";
import type { Logger } from "../observe/logger.ts";
import type { MetricsRegistry } from "../observe/metrics.ts";
import { type JwtAuthority, JwtError } from "../security/jwt.ts";
import type { Keyring } from "../security/keyring.ts";
import {
  type NonceStore,
  type VerificationPolicy,
  type VerificationSuccess,
  verifyRequest,
} from "../security/http_signatures/mod.ts";
import { can, type Permission, type Role } from "../security/roles.ts";
import { errorResponse } from "./errors.ts";
import type { SessionVerifier } from "./session.ts";

/** The one message of every authentication failure. */
export const AUTH_FAILED_MESSAGE = "authentication failed";
/** The challenge sent with every 401. */
export const AUTH_CHALLENGE = 'Bearer realm="plexus", Signature';

/** A verified caller. */
export interface Principal {
  /** The token's `sub`, or the signing key's subject. */
  sub: string;
  /** The token's or the enrolled key's role (node keys are `admin`). */
  role: Role;
  /** How the request proved it: a bearer JWT, an RFC 9421 signature or a dashboard session. */
  via: "jwt" | "signature" | "session";
  /** The token's `kid` or the signature's `keyid`. */
  keyid: string;
  /** JWT and session: expiry, seconds since the epoch. */
  exp?: number;
  /** JWT only: the token id. */
  jti?: string;
  /** Signature only: the accepted signature. */
  signature?: VerificationSuccess;
}

/** Hono variables set by {@linkcode requireAuth}. */
export type AuthVariables = { principal: Principal };

/** Why a request was refused (logs and metrics only). */
export interface AuthFailure {
  /** What the request tried: a bearer JWT, an RFC 9421 signature, a session cookie, or nothing. */
  method: "jwt" | "signature" | "session" | "none";
  /** A short fixed code, safe as a metric label. */
  reason: string;
  /** Precise, for the log. */
  detail: string;
}

/** The RFC 9421 policy knobs a node exposes in its config. */
export interface SignaturePolicyOptions {
  /** Oldest acceptable `created`, seconds. @default {300} */
  maxAgeSec?: number;
  /** Refuse signatures without a `nonce`. @default {true} */
  requireNonce?: boolean;
  /** Tolerated clock difference, seconds. @default {5} */
  clockSkewSec?: number;
  /** Components every signature must cover. @default {["@method","@authority","@path","@query"]} */
  requiredComponents?: readonly string[];
}

/** Options for {@linkcode createAuthenticator}. */
export interface AuthenticatorOptions {
  jwt: Pick<JwtAuthority, "verify">;
  keyring: Pick<Keyring, "signatureKey" | "get">;
  /** Replay store for signature nonces (required when nonces are required). */
  nonceStore?: NonceStore;
  signatures?: SignaturePolicyOptions;
  /** Dashboard sessions: a request with neither header is checked by its cookie. */
  sessions?: SessionVerifier;
  clock?: Clock;
}

/** Verifies requests. */
export interface Authenticator {
  /** Checks the request's bearer token or signature: the caller, or why not. */
  authenticate(
    request: Request,
  ): Promise<
    { ok: true; principal: Principal } | { ok: false; failure: AuthFailure }
  >;
}

const BEARER = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/;

/**
 * Builds the authenticator.
 *
 * @example Usage
 * ```ts
 * import { createAuthenticator } from "./auth.ts";
 * import { createJwtAuthority } from "../security/jwt.ts";
 * import { createKeyring } from "../security/keyring.ts";
 * import { generateNodeKey } from "../security/node_key.ts";
 * import { kvNonceStore } from "../security/http_signatures/mod.ts";
 * import assert from "node:assert/strict";
 * const kv = await Deno.openKv(":memory:");
 * const jwt = createJwtAuthority(await generateNodeKey(), { kv });
 * const auth = createAuthenticator({ jwt, keyring: createKeyring(kv), nonceStore: kvNonceStore(kv) });
 * const token = await jwt.issue("ci", "viewer");
 * const ok = await auth.authenticate(
 *   new Request("http://n/api/v1/plugins", { headers: { authorization: `Bearer ${token}` } }),
 * );
 * assert.ok(ok.ok && ok.principal.role === "viewer");
 * const bad = await auth.authenticate(new Request("http://n/api/v1/plugins"));
 * assert.ok(!bad.ok && bad.failure.reason === "missing-credentials");
 * kv.close();
 * ```
 */
export function createAuthenticator(
  options: AuthenticatorOptions,
): Authenticator {
  const sig = options.signatures ?? {};
  const requireNonce = sig.requireNonce ?? true;
  if (requireNonce && !options.nonceStore) {
    throw new TypeError(
      "Cannot create authenticator: requireNonce needs a nonceStore",
    );
  }
  const policy: VerificationPolicy = {
    maxAgeSec: sig.maxAgeSec ?? 300,
    clockSkewSec: sig.clockSkewSec ?? 5,
    requireNonce,
    nonceStore: options.nonceStore,
    requireContentDigest: "when-body",
    clock: options.clock,
  };
  if (sig.requiredComponents) {
    policy.requiredComponents = sig.requiredComponents;
  }
  const resolveKey = (keyid: string) => options.keyring.signatureKey(keyid);

  const fail = (
    method: AuthFailure["method"],
    reason: string,
    detail: string,
  ) => ({ ok: false as const, failure: { method, reason, detail } });

  async function authenticate(request: Request) {
    const headers = request.headers;
    if (headers.has("signature-input") || headers.has("signature")) {
      if (headers.has("authorization")) {
        return fail(
          "signature",
          "ambiguous-credentials",
          "both a signature and an Authorization header",
        );
      }
      const result = await verifyRequest(request, {
        ...policy,
        resolveKey,
      });
      if (!result.verified) {
        return fail("signature", result.reason, result.detail);
      }
      // The key may have been removed between the two reads; then refuse.
      const key = await options.keyring.get(result.keyid);
      if (!key) {
        return fail("signature", "unknown-key", `key '${result.keyid}' gone`);
      }
      return {
        ok: true as const,
        principal: {
          sub: key.sub,
          role: key.role,
          via: "signature" as const,
          keyid: result.keyid,
          signature: result,
        },
      };
    }
    const authorization = headers.get("authorization");
    if (authorization === null) {
      const session = await options.sessions?.verify(request);
      if (session) return session;
      return fail("none", "missing-credentials", "no Authorization header");
    }
    const m = BEARER.exec(authorization);
    if (!m) {
      return fail("jwt", "malformed", "Authorization is not 'Bearer <token>'");
    }
    try {
      const t = await options.jwt.verify(m[1]);
      return {
        ok: true as const,
        principal: {
          sub: t.sub,
          role: t.role,
          via: "jwt" as const,
          keyid: t.kid,
          exp: t.exp,
          jti: t.jti,
        },
      };
    } catch (err) {
      if (err instanceof JwtError) return fail("jwt", "invalid", err.reason);
      throw err;
    }
  }
  return { authenticate };
}

/** The 401 every authentication failure gets. */
export function unauthorized(): Response {
  return errorResponse(401, AUTH_FAILED_MESSAGE, undefined, {
    "WWW-Authenticate": AUTH_CHALLENGE,
  });
}

/** Options for {@linkcode requireAuth}. */
export interface RequireAuthOptions {
  log?: Logger;
  metrics?: MetricsRegistry;
}

/**
 * Middleware: authenticates the request and sets `principal`, or answers the
 * uniform 401. A request verified by signature gets a `Signature-Verification`
 * header, the caller-safe summary (the seed's `sageVerification` block as a
 * structured-field dictionary).
 */
export function requireAuth(
  auth: Authenticator,
  options: RequireAuthOptions = {},
): MiddlewareHandler<{ Variables: AuthVariables }> {
  const check = authCheck(auth, options);
  return async (c, next) => {
    const admitted = await check.admit(c);
    if (admitted instanceof Response) return admitted;
    await next();
    check.annotate(c, admitted);
  };
}

/**
 * The two halves of {@linkcode requireAuth}, for a handler that runs its own
 * chain (the node's `/api/v1` one) instead of a middleware layer.
 */
export interface AuthCheck {
  /** Sets `principal` and returns it, or returns the 401 (403 for CSRF) to answer. */
  admit(c: Context): Promise<Principal | Response>;
  /** Adds `Signature-Verification` to `c.res` for a principal verified by signature. */
  annotate(c: Context, principal: Principal): void;
}

/**
 * Builds {@linkcode requireAuth}'s checks without the middleware around them.
 *
 * @example Usage
 * ```ts
 * import { authCheck, createAuthenticator } from "./auth.ts";
 * import { createJwtAuthority } from "../security/jwt.ts";
 * import { createKeyring } from "../security/keyring.ts";
 * import { generateNodeKey } from "../security/node_key.ts";
 * import { kvNonceStore } from "../security/http_signatures/mod.ts";
 * import { Hono } from "hono";
 * import assert from "node:assert/strict";
 * const kv = await Deno.openKv(":memory:");
 * const jwt = createJwtAuthority(await generateNodeKey(), { kv });
 * const check = authCheck(
 *   createAuthenticator({ jwt, keyring: createKeyring(kv), nonceStore: kvNonceStore(kv) }),
 * );
 * const app = new Hono().get("/", async (c) => {
 *   const p = await check.admit(c);
 *   return p instanceof Response ? p : c.text(p.sub);
 * });
 * assert.equal((await app.request("/")).status, 401);
 * const token = await jwt.issue("ci", "viewer");
 * const res = await app.request("/", { headers: { authorization: `Bearer ${token}` } });
 * assert.equal(await res.text(), "ci");
 * kv.close();
 * ```
 */
export function authCheck(
  auth: Authenticator,
  options: RequireAuthOptions = {},
): AuthCheck {
  const counter = options.metrics?.counter(
    "plexus_auth_total",
    "API authentications by method, outcome and reason",
  );
  const bound = new Map<string, { inc(): void }>();
  const count = (method: string, outcome: string, reason: string) => {
    if (!counter) return;
    const k = `${method} ${outcome} ${reason}`;
    let b = bound.get(k);
    if (!b) bound.set(k, b = counter.labels({ method, outcome, reason }));
    b.inc();
  };
  return {
    async admit(c) {
      const r = await auth.authenticate(c.req.raw);
      if (!r.ok) {
        count(r.failure.method, "refused", r.failure.reason);
        options.log?.warn("authentication refused", {
          method: r.failure.method,
          reason: r.failure.reason,
          detail: r.failure.detail,
          path: c.req.path,
        });
        return r.failure.reason === "csrf"
          ? errorResponse(403, "missing or wrong CSRF token", "csrf")
          : unauthorized();
      }
      count(r.principal.via, "ok", "ok");
      c.set("principal" as never, r.principal as never);
      return r.principal;
    },
    annotate(c, principal) {
      const s = principal.signature;
      if (!s) return;
      const v = `verified=?1, signatureValid=?1, ${
        s.agentDid ? `agentDid="${s.agentDid}", ` : ""
      }timestamp="${new Date(s.timestamp).toISOString()}"`;
      try {
        c.res.headers.set("Signature-Verification", v);
      } catch {
        c.header("Signature-Verification", v);
      }
    },
  };
}

/** The verified principal of a request behind {@linkcode requireAuth}. */
export function principalOf(c: Context): Principal | undefined {
  return c.get("principal" as never) as Principal | undefined;
}

/**
 * Middleware: 403 unless the principal's role holds `permission` (and 401
 * when there is no principal at all, i.e. requireAuth was not mounted).
 *
 * @example Usage
 * ```ts ignore
 * app.post("/api/v1/tasks", requirePermission("tasks:write"), handler);
 * ```
 */
export function requirePermission(permission: Permission): MiddlewareHandler {
  return async (c, next) => {
    const refused = permissionRefusal(principalOf(c), permission);
    if (refused) return refused;
    await next();
  };
}

/**
 * What {@linkcode requirePermission} answers when `principal` may not act
 * with `permission` (401 without a principal, else 403), or undefined: for
 * a handler that checks in place of a middleware layer.
 *
 * @example Usage
 * ```ts
 * import { permissionRefusal } from "./auth.ts";
 * import assert from "node:assert/strict";
 * const viewer = { sub: "ci", role: "viewer" as const, via: "jwt" as const, keyid: "k" };
 * assert.equal(permissionRefusal(viewer, "tasks:read"), undefined);
 * assert.equal(permissionRefusal(viewer, "admin")?.status, 403);
 * assert.equal(permissionRefusal(undefined, "tasks:read")?.status, 401);
 * ```
 */
export function permissionRefusal(
  principal: Principal | undefined,
  permission: Permission,
): Response | undefined {
  if (!principal) return unauthorized();
  if (!can(principal.role, permission)) {
    return errorResponse(
      403,
      `role '${principal.role}' lacks permission '${permission}'`,
    );
  }
}

/**
 * What {@linkcode requireNodeSignature} answers when `principal` is not
 * another node (an RFC 9421 signature by a node key): 403; else undefined.
 *
 * @example Usage
 * ```ts
 * import { nodeSignatureRefusal } from "./auth.ts";
 * import assert from "node:assert/strict";
 * const jwt = { sub: "node:n2", role: "admin" as const, via: "jwt" as const, keyid: "k" };
 * assert.equal(nodeSignatureRefusal(jwt)?.status, 403);
 * assert.equal(nodeSignatureRefusal({ ...jwt, via: "signature" }), undefined);
 * ```
 */
export function nodeSignatureRefusal(
  principal: Principal | undefined,
): Response | undefined {
  if (
    !principal || principal.via !== "signature" ||
    !principal.sub.startsWith("node:")
  ) {
    return errorResponse(403, "node-to-node route: needs a node's signature");
  }
}

/**
 * Only other nodes (an RFC 9421 signature by a node key) may call: 403
 * otherwise. For node-to-node routes (gateway wake/push/kick, routed tasks).
 */
export const requireNodeSignature: MiddlewareHandler = async (c, next) => {
  const refused = nodeSignatureRefusal(principalOf(c));
  if (refused) return refused;
  await next();
};
