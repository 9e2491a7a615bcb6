/**
 * Dashboard sessions for people: the third way to call `/api/v1` beside a
 * bearer token and an RFC 9421 signature.
 *
 * A login (OpenID Connect, or a one-time link from `plexus login-link`)
 * creates an `operator` session in the KV session store
 * (`core/state/sessions.ts`: only the SHA-256 of the token is stored, the
 * expiry is checked on every read) and sets the token as an
 * `HttpOnly; Secure; SameSite=Lax` cookie. Each login makes a new session
 * and revokes the one the browser came with (rotation), logout revokes it.
 *
 * CSRF: every request that is not `GET`/`HEAD`/`OPTIONS` and proves itself
 * by the cookie must carry the session's synchronizer token in
 * `X-CSRF-Token` (the page reads it from the session endpoint; another
 * site can neither read it nor set the header without a CORS grant).
 *
 * @module
 */
import { timingSafeEqual } from "node:crypto";
import type { Clock } from "../clock.ts";
import {
  createSessionStore,
  type Session,
  type SessionStore,
} from "../state/sessions.ts";
import { createJwtAuthority, JwtError } from "../security/jwt.ts";
import type { NodeKey } from "../security/node_key.ts";
import { isRole, type Role } from "../security/roles.ts";
import { loginLinkUsedKey } from "../state/keys.ts";
import type { AuthFailure, Principal } from "./auth.ts";

/** The kernel capability plugins read the node's {@linkcode OperatorSessions} under. */
export const SESSIONS_CAPABILITY = "http:sessions";
/** The session cookie's name. */
export const SESSION_COOKIE = "plexus_session";
/** The header carrying the CSRF token on state-changing calls. */
export const CSRF_HEADER = "X-CSRF-Token";
/** `aud` of one-time login links, so a link is never an API token. */
export const LOGIN_LINK_AUDIENCE = "plexus-login-link";
/** Methods that change nothing and need no CSRF token. */
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);
const COOKIE_TOKEN_RE = /^[A-Za-z0-9_-]{20,256}$/;

/** What an operator session keeps besides the store's fields. */
export interface OperatorSessionData {
  /** The Plexus role the login mapped to. */
  role: Role;
  /** The synchronizer CSRF token of this session. */
  csrf: string;
  /** A display name (the ID token's `name`/`email`, or the subject). */
  name?: string;
  /** How the person logged in: `oidc`, `oauth2` or `link`. */
  method: string;
}

/** A live operator session as the page sees it. */
export interface OperatorSessionView {
  /** Who: the provider's issuer-qualified subject, e.g. `oidc:alice`. */
  sub: string;
  /** The Plexus role the session acts with. */
  role: Role;
  /** A display name from the provider, when it gave one. */
  name?: string;
  /** The CSRF token to send in {@linkcode CSRF_HEADER}. */
  csrf: string;
  /** Wall-clock ms. */
  expiresAt: number;
}

/** A session as an admin may see it: no token, no CSRF token. */
export interface SessionSummary {
  /** The first 12 characters of the session id (the token's hash). */
  id: string;
  /** Who: the issuer-qualified subject. */
  sub: string;
  /** The Plexus role the session acts with. */
  role: Role;
  /** How the person logged in. */
  method: string;
  /** Wall-clock ms. */
  createdAt: number;
  /** Wall-clock ms. */
  lastSeen: number;
  /** Wall-clock ms. */
  expiresAt: number;
}

/** Verifies the session cookie of a request (what `auth.ts` calls). */
export interface SessionVerifier {
  /**
   * The caller of `request` by its session cookie; `null` when it carries
   * none (then other methods apply), a failure when it carries a bad one
   * or a state-changing call lacks the CSRF token.
   */
  verify(
    request: Request,
  ): Promise<
    | { ok: true; principal: Principal }
    | { ok: false; failure: AuthFailure }
    | null
  >;
}

/** Input of {@linkcode OperatorSessions.login}. */
export interface LoginInput {
  /** The person's stable id, e.g. `oidc:<sub>`. */
  sub: string;
  /** The Plexus role their claims map to. */
  role: Role;
  /** A display name, when the provider gave one. */
  name?: string;
  /** `oidc`, `oauth2` or `link`. */
  method: string;
  /** The request that finished the login: its session (if any) is revoked. */
  request?: Request;
}

/** Operator sessions: login, lookup, logout (and the verifier). */
export interface OperatorSessions extends SessionVerifier {
  /**
   * Creates a new session (revoking the one `input.request` came with) and
   * returns the `Set-Cookie` value to send.
   */
  login(
    input: LoginInput,
  ): Promise<{ cookie: string; session: OperatorSessionView }>;
  /** The live session of `request`'s cookie, or null. */
  current(request: Request): Promise<OperatorSessionView | null>;
  /** Revokes the session of `request`'s cookie; the `Set-Cookie` that clears it. */
  logout(request: Request): Promise<string>;
  /** Revokes every session of `sub`; how many. */
  revokeSubject(sub: string): Promise<number>;
  /** The live sessions of `sub`, oldest first (never their tokens or CSRF tokens). */
  list(sub: string): Promise<SessionSummary[]>;
  /**
   * Redeems a one-time login link token (from {@linkcode issueLoginLink}):
   * the subject and role it grants, or a `JwtError` when it is bad, expired
   * or already used.
   */
  redeemLink(token: string): Promise<{ sub: string; role: Role }>;
}

/** Options for {@linkcode createOperatorSessions}. */
export interface OperatorSessionsOptions {
  /** The node key: verifies login links made by `plexus login-link`. */
  nodeKey?: NodeKey;
  /** `iss` of login links. @default {"plexus"} */
  issuer?: string;
  /** Idle lifetime: a session unused this long ends. @default {3_600_000} */
  idleTtlMs?: number;
  /** Absolute lifetime from login. @default {43_200_000} */
  maxLifetimeMs?: number;
  /** Mark the cookie `Secure`. @default {true} */
  secureCookie?: boolean;
  clock?: Clock;
}

/**
 * The value of cookie `name` in `request`, or undefined.
 *
 * @example Usage
 * ```ts
 * import { readCookie } from "./session.ts";
 * import assert from "node:assert/strict";
 * const req = new Request("http://n/", { headers: { cookie: "a=1; plexus_session=xyz" } });
 * assert.equal(readCookie(req, "plexus_session"), "xyz");
 * ```
 */
export function readCookie(request: Request, name: string): string | undefined {
  const header = request.headers.get("cookie");
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const i = part.indexOf("=");
    if (i < 0) continue;
    if (part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

function randomToken(): string {
  return crypto.getRandomValues(new Uint8Array(32)).toBase64({
    alphabet: "base64url",
    omitPadding: true,
  });
}

function sameSecret(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function view(s: Session): OperatorSessionView {
  const d = s.data as OperatorSessionData;
  return {
    sub: s.subject,
    role: d.role,
    ...(d.name === undefined ? {} : { name: d.name }),
    csrf: d.csrf,
    expiresAt: s.expiresAt,
  };
}

/**
 * Signs a one-time admin login link token with the node key (what
 * `plexus login-link` prints): audience {@linkcode LOGIN_LINK_AUDIENCE}, so
 * it is refused as an API token, and single use.
 *
 * @example Usage
 * ```ts
 * import { createOperatorSessions, issueLoginLink } from "./session.ts";
 * import { generateNodeKey } from "../security/node_key.ts";
 * import assert from "node:assert/strict";
 * const kv = await Deno.openKv(":memory:");
 * const nodeKey = await generateNodeKey();
 * const sessions = createOperatorSessions(kv, { nodeKey });
 * const token = await issueLoginLink(nodeKey, { ttlMs: 60_000 });
 * assert.equal((await sessions.redeemLink(token)).role, "admin");
 * await assert.rejects(sessions.redeemLink(token)); // single use
 * kv.close();
 * ```
 */
export function issueLoginLink(
  nodeKey: NodeKey,
  options: { issuer?: string; ttlMs?: number; sub?: string } = {},
): Promise<string> {
  return createJwtAuthority(nodeKey, {
    issuer: options.issuer,
    audience: LOGIN_LINK_AUDIENCE,
  }).issue(options.sub ?? "login-link", "admin", {
    ttl: options.ttlMs ?? 300_000,
  });
}

/**
 * Operator sessions over the node's KV.
 *
 * @example Usage
 * ```ts
 * import { createOperatorSessions, CSRF_HEADER } from "./session.ts";
 * import assert from "node:assert/strict";
 * const kv = await Deno.openKv(":memory:");
 * const sessions = createOperatorSessions(kv);
 * const { cookie, session } = await sessions.login({ sub: "oidc:alice", role: "viewer", method: "oidc" });
 * const sent = cookie.split(";")[0];
 * const get = await sessions.verify(new Request("http://n/api/v1/cluster", { headers: { cookie: sent } }));
 * assert.ok(get?.ok && get.principal.role === "viewer");
 * const post = await sessions.verify(new Request("http://n/api/v1/tasks", { method: "POST", headers: { cookie: sent } }));
 * assert.ok(post && !post.ok && post.failure.reason === "csrf");
 * const withToken = await sessions.verify(new Request("http://n/api/v1/tasks", {
 *   method: "POST", headers: { cookie: sent, [CSRF_HEADER]: session.csrf },
 * }));
 * assert.ok(withToken?.ok);
 * kv.close();
 * ```
 */
export function createOperatorSessions(
  kv: Deno.Kv,
  options: OperatorSessionsOptions = {},
): OperatorSessions {
  const idleTtlMs = options.idleTtlMs ?? 3_600_000;
  const store: SessionStore = createSessionStore(kv, {
    clock: options.clock,
    defaultTtlMs: idleTtlMs,
    maxLifetimeMs: options.maxLifetimeMs ?? 43_200_000,
  });
  const secure = options.secureCookie ?? true;
  const links = options.nodeKey
    ? createJwtAuthority(options.nodeKey, {
      kv,
      issuer: options.issuer,
      audience: LOGIN_LINK_AUDIENCE,
      clock: options.clock,
    })
    : undefined;
  const now = () => options.clock?.now() ?? Date.now();
  const cookieOf = (value: string, maxAgeS: number) =>
    `${SESSION_COOKIE}=${value}; Path=/; HttpOnly; ${
      secure ? "Secure; " : ""
    }SameSite=Lax; Max-Age=${maxAgeS}`;
  const tokenOf = (request: Request) => {
    const t = readCookie(request, SESSION_COOKIE);
    return t !== undefined && COOKIE_TOKEN_RE.test(t) ? t : undefined;
  };
  /** The live operator session of a token, its idle expiry slid at most once a minute. */
  const live = async (token: string): Promise<Session | null> => {
    const s = await store.get(token);
    if (!s || s.kind !== "operator") return null;
    if (now() - s.lastSeen < 60_000) return s;
    return await store.touch(token);
  };

  return {
    async verify(request) {
      const raw = readCookie(request, SESSION_COOKIE);
      if (raw === undefined) return null;
      const fail = (reason: string, detail: string) => ({
        ok: false as const,
        failure: { method: "session" as const, reason, detail },
      });
      const token = tokenOf(request);
      if (!token) return fail("malformed", "session cookie is not a token");
      const s = await live(token);
      if (!s) return fail("invalid", "no live session for the cookie");
      const d = s.data as OperatorSessionData;
      if (!isRole(d?.role)) return fail("invalid", "session has no role");
      if (!SAFE_METHODS.has(request.method)) {
        const sent = request.headers.get(CSRF_HEADER);
        if (sent === null || !sameSecret(sent, d.csrf)) {
          return fail(
            "csrf",
            `${request.method} with a session cookie ${
              sent === null ? "lacks" : "has a wrong"
            } ${CSRF_HEADER}`,
          );
        }
      }
      return {
        ok: true as const,
        principal: {
          sub: s.subject,
          role: d.role,
          via: "session" as const,
          keyid: `session:${s.id.slice(0, 8)}`,
          exp: Math.floor(s.expiresAt / 1000),
        },
      };
    },

    async login(input) {
      if (!isRole(input.role)) {
        throw new TypeError(
          `Cannot log in '${input.sub}': '${String(input.role)}' is not a role`,
        );
      }
      const old = input.request ? tokenOf(input.request) : undefined;
      if (old) await store.revoke(old);
      const data: OperatorSessionData = {
        role: input.role,
        csrf: randomToken(),
        method: input.method,
        ...(input.name === undefined ? {} : { name: input.name }),
      };
      const { token, session } = await store.create({
        subject: input.sub,
        kind: "operator",
        data,
      });
      const maxAge = Math.floor((options.maxLifetimeMs ?? 43_200_000) / 1000);
      return { cookie: cookieOf(token, maxAge), session: view(session) };
    },

    async current(request) {
      const token = tokenOf(request);
      if (!token) return null;
      const s = await live(token);
      return s ? view(s) : null;
    },

    async logout(request) {
      const token = tokenOf(request);
      if (token) await store.revoke(token);
      return cookieOf("", 0);
    },

    revokeSubject: (sub) => store.revokeSubject(sub),

    async list(sub) {
      return (await store.list(sub))
        .filter((s) => s.kind === "operator")
        .map((s) => {
          const d = s.data as OperatorSessionData;
          return {
            id: s.id.slice(0, 12),
            sub: s.subject,
            role: d.role,
            method: d.method,
            createdAt: s.createdAt,
            lastSeen: s.lastSeen,
            expiresAt: s.expiresAt,
          };
        });
    },

    async redeemLink(token) {
      if (!links) {
        throw new JwtError("this node has no key to verify login links");
      }
      const t = await links.verify(token);
      // Single use: only the first redemption's commit passes the check.
      const key = loginLinkUsedKey(t.jti);
      const expireIn = Math.max(0, t.exp * 1000 - now()) + 120_000;
      const res = await kv.atomic().check({ key, versionstamp: null })
        .set(key, { at: now() }, { expireIn }).commit();
      if (!res.ok) throw new JwtError(`login link '${t.jti}' already used`);
      return { sub: t.sub, role: t.role };
    },
  };
}
