/**
 * The node's security wiring, built once from its config and key: token
 * authority, keyring, authenticator, shared rate limiters and the response
 * signer; plus the admin routes that manage them
 * (`/api/v1/auth/*`, `/api/v1/keys`, `/api/v1/audit`).
 *
 * @module
 */
import { Hono } from "hono";
import { z } from "zod";
import type { Config } from "../config.ts";
import type { Clock } from "../clock.ts";
import { createJwtAuthority, type JwtAuthority } from "../security/jwt.ts";
import {
  createKeyring,
  enrolmentSchema,
  type Keyring,
  KeyringError,
} from "../security/keyring.ts";
import type { NodeKey } from "../security/node_key.ts";
import {
  kvNonceStore,
  type SignatureKey,
  signResponse,
  verificationBlock,
} from "../security/http_signatures/mod.ts";
import { createRateLimiter, type RateLimiter } from "../security/rate_limit.ts";
import { listAudit } from "../security/audit.ts";
import { JwtError } from "../security/jwt.ts";
import {
  type Authenticator,
  type AuthVariables,
  createAuthenticator,
  principalOf,
  requirePermission,
} from "./auth.ts";
import { errorResponse } from "./errors.ts";
import { createOperatorSessions, type OperatorSessions } from "./session.ts";
import { readJson } from "./json.ts";

/** What the app needs to secure `/api/v1` and `/ws`. */
export interface Security {
  /** The node's signing key. */
  nodeKey: NodeKey;
  /** Issues, verifies and revokes API tokens. */
  jwt: JwtAuthority;
  /** The trusted keys (nodes' and enrolled services'). */
  keyring: Keyring;
  /** Verifies requests' tokens, signatures and session cookies. */
  auth: Authenticator;
  /** Dashboard sessions (the login plugin creates them; `auth` checks them). */
  sessions: OperatorSessions;
  /** Shared limiters; absent when rate limiting is off. */
  limits?: {
    ip: RateLimiter;
    principal: RateLimiter;
    wsHandshake: RateLimiter;
  };
  /** The log stream needs a token (`token`) or takes one optionally (`open`). */
  logStream: "open" | "token";
  /** Signs a response when the request asked with `Accept-Signature`. */
  signResponses: boolean;
  /** The node key as an RFC 9421 signing key (keyid = its kid). */
  signingKey: SignatureKey;
}

/** Options for {@linkcode createSecurity}. */
export interface SecurityOptions {
  kv: Deno.Kv;
  nodeKey: NodeKey;
  auth?: Partial<Config["auth"]>;
  rateLimit?: Partial<Config["rateLimit"]>;
  clock?: Clock;
}

/**
 * Builds the node's security from its config (defaults as in `config.ts`).
 *
 * @example Usage
 * ```ts
 * import { createSecurity } from "./security.ts";
 * import { generateNodeKey } from "../security/node_key.ts";
 * import assert from "node:assert/strict";
 * const kv = await Deno.openKv(":memory:");
 * const sec = createSecurity({ kv, nodeKey: await generateNodeKey() });
 * const token = await sec.jwt.issue("ci", "admin");
 * const r = await sec.auth.authenticate(
 *   new Request("http://n/api/v1/keys", { headers: { authorization: `Bearer ${token}` } }),
 * );
 * assert.ok(r.ok);
 * kv.close();
 * ```
 */
export function createSecurity(options: SecurityOptions): Security {
  const { kv, nodeKey } = options;
  const a = options.auth ?? {};
  const keyring = createKeyring(kv, {
    cacheMs: a.keyCacheMs ?? 5000,
    clock: options.clock,
  });
  const jwt = createJwtAuthority(nodeKey, {
    kv,
    issuer: a.issuer,
    audience: a.audience,
    clockToleranceS: a.clockToleranceS,
    revocationRefreshMs: a.revocationRefreshMs ?? 100,
    clock: options.clock,
    resolveKey: (kid) => keyring.nodeJwtKey(kid),
  });
  const sessions = createOperatorSessions(kv, {
    nodeKey,
    issuer: a.issuer,
    idleTtlMs: a.sessionIdleMs,
    maxLifetimeMs: a.sessionMaxMs,
    clock: options.clock,
  });
  const auth = createAuthenticator({
    jwt,
    keyring,
    sessions,
    nonceStore: kvNonceStore(kv, { clock: options.clock }),
    signatures: {
      maxAgeSec: a.signatureMaxAgeSec,
      requireNonce: a.requireNonce,
    },
    clock: options.clock,
  });
  const rl = options.rateLimit ?? {};
  const limiter = (
    scope: string,
    p: { rate: number; periodMs: number; burst: number } | undefined,
    rate: number,
    burst: number,
  ) =>
    createRateLimiter(kv, {
      scope,
      rate: p?.rate ?? rate,
      periodMs: p?.periodMs ?? 1000,
      burst: p?.burst ?? burst,
      clock: options.clock,
    });
  const limits = rl.enabled === false ? undefined : {
    ip: limiter("ip", rl.ip, 200, 400),
    principal: limiter("principal", rl.principal, 100, 200),
    wsHandshake: limiter("ws-handshake", rl.wsHandshake, 5, 20),
  };
  return {
    nodeKey,
    jwt,
    keyring,
    auth,
    sessions,
    limits,
    logStream: a.logStream ?? "open",
    signResponses: a.signResponses ?? true,
    signingKey: { keyid: nodeKey.kid, alg: "ed25519", key: nodeKey.privateKey },
  };
}

/**
 * Signs `response` with the node key when `request` carries
 * `Accept-Signature` (RFC 9421 §5): covers `@status`, `content-type`,
 * `content-digest` and the request's `@method`, `@path` and `@authority`
 * (`;req`), so an answer cannot be replayed for another request. Other
 * responses pass unchanged.
 */
export async function maybeSignResponse(
  security: Pick<Security, "signResponses" | "signingKey">,
  request: Request,
  response: Response,
): Promise<Response> {
  if (!security.signResponses || !request.headers.has("accept-signature")) {
    return response;
  }
  const components = ["@status"];
  if (response.headers.has("content-type")) components.push("content-type");
  if (response.body !== null) components.push("content-digest");
  components.push('"@method";req', '"@path";req', '"@authority";req');
  return await signResponse(response, {
    key: security.signingKey,
    request,
    components,
    label: "plexus",
  });
}

const revokeSchema = z.union([
  z.strictObject({ token: z.string().min(1).max(8192) }),
  z.strictObject({
    jti: z.string().min(1).max(128),
    /** Expiry of the token, seconds since the epoch. */
    exp: z.number().int().positive(),
  }),
]);

const auditQuery = z.strictObject({
  since: z.coerce.number().int().min(0).optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
});

/**
 * Routes at `/api/v1` (mounted after authentication):
 *
 * - `GET /auth/whoami` (any role): the principal, and for a signed request
 *   its `sageVerification` block;
 * - `POST /auth/revoke` (admin): `{"token"}` or `{"jti","exp"}`;
 * - `GET /keys`, `POST /keys`, `DELETE /keys/{keyid}` (admin): trusted keys;
 * - `GET /audit?since=&limit=` (admin): audit records from KV.
 */
export function securityRoutes(
  security: Security,
  kv: Deno.Kv,
): Hono<{ Variables: AuthVariables }> {
  const app = new Hono<{ Variables: AuthVariables }>();
  app.get("/auth/whoami", (c) => {
    const p = principalOf(c)!;
    const body: Record<string, unknown> = {
      sub: p.sub,
      role: p.role,
      via: p.via,
      keyid: p.keyid,
    };
    if (p.exp !== undefined) body.exp = p.exp;
    if (p.signature) body.sageVerification = verificationBlock(p.signature);
    return c.json(body);
  });
  app.post("/auth/revoke", requirePermission("admin"), async (c) => {
    const body = await readJson(c, revokeSchema);
    if (body instanceof Response) return body;
    let jti: string, exp: number;
    if ("token" in body) {
      try {
        ({ jti, exp } = await security.jwt.verify(body.token));
      } catch (err) {
        if (err instanceof JwtError) {
          // Already unusable: nothing to revoke, and no oracle either.
          return errorResponse(400, "token is not a valid current token");
        }
        throw err;
      }
    } else ({ jti, exp } = body);
    await security.jwt.revoke(jti, exp);
    return c.json({ revoked: jti, until: exp });
  });
  app.get(
    "/keys",
    requirePermission("admin"),
    async (c) => c.json(await security.keyring.list()),
  );
  app.post("/keys", requirePermission("admin"), async (c) => {
    const input = await readJson(c, enrolmentSchema);
    if (input instanceof Response) return input;
    try {
      const r = await security.keyring.enrol(input, principalOf(c)!.sub);
      return c.json(r.secret ? { ...r.key, secret: r.secret } : r.key, 201);
    } catch (err) {
      if (err instanceof KeyringError) {
        return errorResponse(err.status, err.message);
      }
      throw err;
    }
  });
  app.delete("/keys/:keyid", requirePermission("admin"), async (c) => {
    const keyid = c.req.param("keyid");
    if (keyid === security.nodeKey.kid) {
      return errorResponse(409, "cannot remove this node's own key");
    }
    return await security.keyring.remove(keyid)
      ? c.body(null, 204)
      : errorResponse(404, `no key '${keyid.slice(0, 80)}'`);
  });
  app.get("/audit", requirePermission("admin"), async (c) => {
    const q = auditQuery.safeParse(c.req.query());
    if (!q.success) return errorResponse(400, q.error.issues[0].message);
    return c.json(await listAudit(kv, q.data));
  });
  return app;
}
