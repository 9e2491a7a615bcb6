/**
 * API tokens: JWTs signed with the node key (EdDSA), checked with the
 * algorithm pinned to the key that the `kid` names, never the one the token
 * asks for. Optionally an explicitly configured shared secret is trusted for
 * HS256 under its own `kid`.
 *
 * Every token carries `iss`, `aud`, `sub`, `role`, `jti`, `iat` and `exp`
 * (all required on verification), and the header `typ: at+jwt` so other
 * kinds of JWT cannot be passed off as API tokens. Clock leeway is at most
 * 60 s. Revoked `jti`s are kept in Deno KV until the token would have
 * expired anyway.
 *
 * Every failure of {@linkcode JwtAuthority.verify} is a {@linkcode JwtError}
 * with one message for callers ({@linkcode INVALID_TOKEN_MESSAGE}) and the
 * precise cause in `reason`, for logs only.
 *
 * @module
 */
import { decodeProtectedHeader, errors, jwtVerify, SignJWT } from "jose";
import type { Clock } from "../clock.ts";
import { REVOCATIONS_KEY, revokedJtiKey } from "../state/keys.ts";
import { parseDuration } from "./duration.ts";
import { NODE_KEY_ALG, type NodeKey } from "./node_key.ts";
import { isRole, type Role, ROLES } from "./roles.ts";
import { deleteOldest } from "../oldest.ts";

/** Default `iss` of tokens this node issues and accepts. */
export const DEFAULT_ISSUER = "plexus";
/** Default `aud` of API tokens. */
export const DEFAULT_AUDIENCE = "plexus-api";
/** The `typ` header of API tokens (RFC 9068 access token). */
export const TOKEN_TYPE = "at+jwt";
/** Upper bound of the clock leeway, in seconds. */
export const MAX_CLOCK_TOLERANCE_S = 60;
/** Lifetime of a token when `issue` is given no `ttl`. */
export const DEFAULT_TTL = "15m";
/** Longest token lifetime unless `maxTtl` says otherwise (30 days). */
export const DEFAULT_MAX_TTL_MS = 30 * 86_400_000;
/** The one message every refused token gets. */
export const INVALID_TOKEN_MESSAGE = "invalid or expired token";

/** Tokens longer than this are refused before any parsing. */
const MAX_TOKEN_CHARS = 8192;
const MAX_CLAIM_CHARS = 256;
const MAX_JTI_CHARS = 128;
/** Verified tokens remembered per authority (a few hundred bytes each). */
const MAX_CACHED_TOKENS = 10_000;
const MIN_SECRET_BYTES = 32;
const DEFAULT_SHARED_KID = "plexus-shared";
const REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "jti"];
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** A refused token. Show callers `message`; log `reason`. */
export class JwtError extends Error {
  override name = "JwtError";
  /** Why the token was refused (for logs, never for the caller). */
  readonly reason: string;
  constructor(reason: string, options?: ErrorOptions) {
    super(INVALID_TOKEN_MESSAGE, options);
    this.reason = reason;
  }
}

/** A secret shared with other issuers, trusted for HS256 only. */
export interface SharedSecretOptions {
  /** At least 32 random bytes. */
  secret: Uint8Array;
  /** The `kid` tokens signed with it must carry. @default {"plexus-shared"} */
  kid?: string;
}

/** Options for {@linkcode createJwtAuthority}. */
export interface JwtAuthorityOptions {
  /** `iss` of issued tokens, and the only one accepted. @default {"plexus"} */
  issuer?: string;
  /** `aud` of issued tokens, and the only one accepted. @default {"plexus-api"} */
  audience?: string;
  /** Leeway for `exp`, `nbf` and `iat`, whole seconds from 0 to 60. @default {30} */
  clockToleranceS?: number;
  /**
   * Longest lifetime: `issue` refuses a longer `ttl`, `verify` refuses
   * tokens whose `exp - iat` or age exceed it. A duration or ms.
   * @default {DEFAULT_MAX_TTL_MS} (30 days)
   */
  maxTtl?: string | number;
  /** Revocation store; `verify` and `revoke` need it, `issue` does not. */
  kv?: Deno.Kv;
  /** Also trust HS256 tokens made with this secret (never by default). */
  sharedSecret?: SharedSecretOptions;
  /** Time source. @default {systemClock} */
  clock?: Pick<Clock, "now">;
  /**
   * Other trusted Ed25519 keys (the cluster's other nodes) by `kid`, checked
   * with EdDSA only; undefined when `kid` is not one. The keyring's
   * `nodeJwtKey` fits. Tokens are still only ever issued with this node's key.
   */
  resolveKey?: (kid: string) => Promise<CryptoKey | undefined>;
  /**
   * How long a read of the revocation counter is reused, in ms. 0: every
   * verification reads KV (or joins a read in flight). A node that revokes a
   * token refuses it at once either way; other nodes sharing the KV within
   * this time. @default {0}
   */
  revocationRefreshMs?: number;
}

/** Options for {@linkcode JwtAuthority.issue}. */
export interface IssueOptions {
  /** Lifetime: a duration such as `"1h"` or ms. @default {"15m"} */
  ttl?: string | number;
  /** Token id, used to revoke it. @default {crypto.randomUUID()} */
  jti?: string;
}

/** What a verified token says. Other claims in the token are dropped. */
export interface VerifiedToken {
  /** Who the token was issued to. */
  sub: string;
  /** The role it grants. */
  role: Role;
  /** The token id (what revocation names). */
  jti: string;
  /** Issued at, seconds since the epoch. */
  iat: number;
  /** Expires at, seconds since the epoch. */
  exp: number;
  /** The issuer. */
  iss: string;
  /** The key that verified it and that key's pinned algorithm. */
  kid: string;
  /** The algorithm it was verified with (the key's, never the token's). */
  alg: typeof NODE_KEY_ALG | "HS256";
}

/** Issues, verifies and revokes API tokens for one node key. */
export interface JwtAuthority {
  /** `kid` of the node key, set on every issued token. */
  readonly kid: string;
  /** `iss` of issued tokens, and the only one accepted. */
  readonly issuer: string;
  /** `aud` of issued tokens, and the only one accepted. */
  readonly audience: string;
  /** Signs a token for `sub` with `role`. Throws `TypeError`/`RangeError`/`SyntaxError` on bad input. */
  issue(sub: string, role: Role, options?: IssueOptions): Promise<string>;
  /**
   * Verifies `token`; throws {@linkcode JwtError} on any failure of the
   * token (and `TypeError` when the authority has no `kv`).
   */
  verify(token: string): Promise<VerifiedToken>;
  /** Revokes `jti` until `exp` (seconds since the epoch) plus the leeway. */
  revoke(jti: string, exp: number): Promise<void>;
}

interface TrustedKey {
  alg: typeof NODE_KEY_ALG | "HS256";
  key: CryptoKey | Uint8Array;
}

/**
 * Builds the token authority of a node key. Options are validated here:
 * a leeway above 60 s, a short shared secret or an empty issuer throw
 * `RangeError`/`TypeError`.
 *
 * @example Usage
 * ```ts
 * import { createJwtAuthority } from "./jwt.ts";
 * import { generateNodeKey } from "./node_key.ts";
 * import assert from "node:assert/strict";
 * const kv = await Deno.openKv(":memory:");
 * const auth = createJwtAuthority(await generateNodeKey(), { kv });
 * const token = await auth.issue("ci", "operator", { ttl: "1h" });
 * const claims = await auth.verify(token);
 * assert.equal(claims.role, "operator");
 * await auth.revoke(claims.jti, claims.exp);
 * await assert.rejects(auth.verify(token), { name: "JwtError" });
 * kv.close();
 * ```
 */
export function createJwtAuthority(
  key: NodeKey,
  options: JwtAuthorityOptions = {},
): JwtAuthority {
  const issuer = checkName("issuer", options.issuer ?? DEFAULT_ISSUER);
  const audience = checkName("audience", options.audience ?? DEFAULT_AUDIENCE);
  const toleranceS = options.clockToleranceS ?? 30;
  if (
    !Number.isInteger(toleranceS) || toleranceS < 0 ||
    toleranceS > MAX_CLOCK_TOLERANCE_S
  ) {
    throw new RangeError(
      `clockToleranceS must be a whole number of seconds from 0 to ${MAX_CLOCK_TOLERANCE_S}, got ${toleranceS}`,
    );
  }
  const maxTtlS = Math.floor(
    durationMs(
      "maxTtl",
      options.maxTtl ?? DEFAULT_MAX_TTL_MS,
      365 * 86_400_000,
    ) / 1000,
  );
  const clock = options.clock ?? { now: () => Date.now() };
  const kv = options.kv;

  // kid → key with its algorithm. A Map, so attacker-chosen kids such as
  // "__proto__" find nothing, and nothing is ever fetched or read by kid.
  const keys = new Map<string, TrustedKey>([
    [key.kid, { alg: NODE_KEY_ALG, key: key.publicKey }],
  ]);
  if (options.sharedSecret !== undefined) {
    const { secret, kid = DEFAULT_SHARED_KID } = options.sharedSecret;
    if (!(secret instanceof Uint8Array) || secret.length < MIN_SECRET_BYTES) {
      throw new RangeError(
        `sharedSecret.secret must be at least ${MIN_SECRET_BYTES} bytes, got ${
          secret instanceof Uint8Array ? secret.length : typeof secret
        }`,
      );
    }
    checkName("sharedSecret.kid", kid);
    if (keys.has(kid)) {
      throw new RangeError(
        `sharedSecret.kid '${kid}' is the node key's kid; choose another`,
      );
    }
    keys.set(kid, { alg: "HS256", key: secret.slice() });
  }

  function needKv(what: string): Deno.Kv {
    if (kv === undefined) {
      throw new TypeError(
        `Cannot ${what}: this JwtAuthority has no revocation store (pass options.kv)`,
      );
    }
    return kv;
  }

  async function issue(
    sub: string,
    role: Role,
    issueOptions: IssueOptions = {},
  ): Promise<string> {
    checkSubject(sub);
    if (!isRole(role)) {
      throw new RangeError(
        `Cannot issue a token: role must be one of ${ROLES.join(", ")}, got '${
          String(role)
        }'`,
      );
    }
    const ttlS = Math.ceil(
      durationMs("ttl", issueOptions.ttl ?? DEFAULT_TTL, maxTtlS * 1000) /
        1000,
    );
    const jti = issueOptions.jti ?? crypto.randomUUID();
    checkJti(jti);
    const iat = Math.floor(clock.now() / 1000);
    return await new SignJWT({ role })
      .setProtectedHeader({ alg: NODE_KEY_ALG, typ: TOKEN_TYPE, kid: key.kid })
      .setIssuer(issuer)
      .setAudience(audience)
      .setSubject(sub)
      .setJti(jti)
      .setIssuedAt(iat)
      .setExpirationTime(iat + ttlS)
      .sign(key.privateKey);
  }

  async function verifyToken(token: unknown): Promise<VerifiedToken> {
    if (typeof token !== "string") {
      throw new JwtError(`token is a ${typeof token}, not a string`);
    }
    if (token.length > MAX_TOKEN_CHARS) {
      throw new JwtError(
        `token is ${token.length} characters (limit ${MAX_TOKEN_CHARS})`,
      );
    }
    let header;
    try {
      header = decodeProtectedHeader(token);
    } catch (err) {
      throw new JwtError(`malformed header: ${(err as Error).message}`, {
        cause: err,
      });
    }
    // Only an absent kid means the node key; null, "" or a number do not.
    const kid: unknown = header.kid === undefined ? key.kid : header.kid;
    let trusted = typeof kid === "string" ? keys.get(kid) : undefined;
    if (
      trusted === undefined && typeof kid === "string" &&
      options.resolveKey !== undefined && kid.length <= MAX_CLAIM_CHARS
    ) {
      let other: CryptoKey | undefined;
      try {
        other = await options.resolveKey(kid);
      } catch (err) {
        throw new JwtError(
          `key store unavailable: ${(err as Error).message}`,
          { cause: err },
        );
      }
      if (other !== undefined) trusted = { alg: NODE_KEY_ALG, key: other };
    }
    if (trusted === undefined) {
      throw new JwtError(
        `unknown kid ${JSON.stringify(String(kid).slice(0, 64))}`,
      );
    }
    let payload;
    try {
      ({ payload } = await jwtVerify(token, trusted.key, {
        algorithms: [trusted.alg],
        issuer,
        audience,
        typ: TOKEN_TYPE,
        requiredClaims: REQUIRED_CLAIMS,
        clockTolerance: toleranceS,
        maxTokenAge: maxTtlS,
        currentDate: new Date(clock.now()),
      }));
    } catch (err) {
      const code = err instanceof errors.JOSEError ? `${err.code}: ` : "";
      throw new JwtError(`${code}${(err as Error).message}`, { cause: err });
    }
    const { sub, role, jti, iat, exp, iss } = payload;
    if (
      typeof sub !== "string" || sub.length === 0 ||
      sub.length > MAX_CLAIM_CHARS
    ) {
      throw new JwtError(
        `'sub' must be a non-empty string of up to ${MAX_CLAIM_CHARS} characters`,
      );
    }
    if (!isRole(role)) {
      throw new JwtError(
        `'role' must be one of ${ROLES.join(", ")}, got ${
          JSON.stringify(role)?.slice(0, 64)
        }`,
      );
    }
    if (
      typeof jti !== "string" || jti.length === 0 ||
      jti.length > MAX_JTI_CHARS
    ) {
      throw new JwtError(
        `'jti' must be a non-empty string of up to ${MAX_JTI_CHARS} characters`,
      );
    }
    // jose has checked that these are numbers; bound the lifetime too, so a
    // revocation entry never has to outlive maxTtl.
    if (exp! - iat! > maxTtlS) {
      throw new JwtError(
        `lifetime exp - iat = ${exp! - iat!} s exceeds maxTtl ${maxTtlS} s`,
      );
    }
    return Object.freeze({
      sub,
      role,
      jti,
      iat: iat!,
      exp: exp!,
      iss: iss!,
      kid: kid as string,
      alg: trusted.alg,
    });
  }

  // Revoked ids are mirrored in memory and reloaded when the revocation
  // counter changes. Every check reads the counter, but concurrent checks
  // share one read: a busy node does one small KV read per read latency,
  // not one per request. A revocation committed while a shared read is in
  // flight is seen by the next read: the window is one KV read (well under a
  // millisecond on a local file), on every node sharing the KV.
  let mirror: { count: bigint; ids: Set<string> } | undefined;
  let counterRead: Promise<Set<string>> | undefined;
  const refreshMs = options.revocationRefreshMs ?? 0;
  if (!Number.isFinite(refreshMs) || refreshMs < 0 || refreshMs > 60_000) {
    throw new RangeError(
      `revocationRefreshMs must be 0-60000 ms, got ${refreshMs}`,
    );
  }
  /** performance.now() when the last successful counter read started. */
  let lastReadStarted = -Infinity;

  async function loadRevoked(store: Deno.Kv): Promise<Set<string>> {
    const counter = await store.get<Deno.KvU64>(REVOCATIONS_KEY);
    const count = counter.value?.value ?? 0n;
    if (mirror?.count === count) return mirror.ids;
    const ids = new Set<string>();
    if (count > 0n) {
      for await (
        const e of store.list({ prefix: revokedJtiKey() }, { batchSize: 500 })
      ) ids.add(e.key[1] as string);
    }
    mirror = { count, ids };
    return ids;
  }

  function revokedIds(store: Deno.Kv): Promise<Set<string>> {
    if (mirror && performance.now() - lastReadStarted < refreshMs) {
      return Promise.resolve(mirror.ids);
    }
    if (counterRead === undefined) {
      const started = performance.now();
      counterRead = loadRevoked(store).then((ids) => {
        lastReadStarted = started;
        return ids;
      }).finally(() => (counterRead = undefined));
    }
    return counterRead;
  }

  async function checkNotRevoked(jti: string, store: Deno.Kv): Promise<void> {
    let ids: Set<string>;
    try {
      ids = await revokedIds(store);
    } catch (err) {
      throw new JwtError(
        `revocation store unavailable: ${(err as Error).message}`,
        { cause: err },
      );
    }
    if (ids.has(jti)) {
      throw new JwtError(`jti ${JSON.stringify(jti)} is revoked`);
    }
  }

  // Tokens whose signature and claims already verified, by their exact
  // string, oldest first: a hit skips parsing and the Ed25519 check (the
  // costly part) but never the time checks, the key's trust or revocation.
  const verified = new Map<string, VerifiedToken>();

  /** The cached claims of `token` while still within their times, else undefined. */
  async function cachedClaims(
    token: string,
  ): Promise<VerifiedToken | undefined> {
    const claims = verified.get(token);
    if (claims === undefined) return undefined;
    const nowS = clock.now() / 1000;
    const stillTrusted = claims.kid === key.kid || keys.has(claims.kid) ||
      await options.resolveKey?.(claims.kid).catch(() => undefined) !==
        undefined;
    if (
      nowS - toleranceS >= claims.exp ||
      nowS - claims.iat > maxTtlS + toleranceS ||
      !stillTrusted
    ) {
      verified.delete(token);
      return undefined;
    }
    return claims;
  }

  async function verify(token: string): Promise<VerifiedToken> {
    // A missing store is a wiring bug, not a bad token: fail loudly.
    const store = needKv("verify tokens");
    try {
      let claims = typeof token === "string"
        ? await cachedClaims(token)
        : undefined;
      if (claims === undefined) {
        claims = await verifyToken(token);
        if (verified.size >= MAX_CACHED_TOKENS) {
          deleteOldest(verified);
        }
        verified.set(token, claims);
      }
      await checkNotRevoked(claims.jti, store);
      return claims;
    } catch (err) {
      if (err instanceof JwtError) throw err;
      throw new JwtError(`unexpected: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  async function revoke(jti: string, exp: number): Promise<void> {
    checkJti(jti);
    if (!Number.isFinite(exp)) {
      throw new RangeError(
        `Cannot revoke '${jti}': exp must be seconds since the epoch, got ${exp}`,
      );
    }
    const store = needKv("revoke tokens");
    const now = clock.now();
    // Kept until no clock within the leeway could still accept the token.
    const expireIn = Math.max(0, exp * 1000 - now) + toleranceS * 1000 +
      60_000;
    await store.atomic()
      .set(revokedJtiKey(jti), { revokedAt: now, exp }, { expireIn })
      .sum(REVOCATIONS_KEY, 1n)
      .commit();
    mirror?.ids.add(jti); // at once here; elsewhere with the next counter read
  }

  return Object.freeze({
    kid: key.kid,
    issuer,
    audience,
    issue,
    verify,
    revoke,
  });
}

function checkName(field: string, value: unknown): string {
  if (
    typeof value !== "string" || value.length === 0 ||
    value.length > MAX_CLAIM_CHARS || CONTROL.test(value)
  ) {
    throw new TypeError(
      `${field} must be 1-${MAX_CLAIM_CHARS} printable characters, got ${
        JSON.stringify(value)
      }`,
    );
  }
  return value;
}

function checkSubject(sub: unknown): void {
  if (
    typeof sub !== "string" || sub.length === 0 ||
    sub.length > MAX_CLAIM_CHARS || CONTROL.test(sub)
  ) {
    throw new TypeError(
      `Cannot issue a token: sub must be 1-${MAX_CLAIM_CHARS} printable characters, got ${
        JSON.stringify(sub)?.slice(0, 80)
      }`,
    );
  }
}

function checkJti(jti: unknown): void {
  if (
    typeof jti !== "string" || jti.length === 0 ||
    jti.length > MAX_JTI_CHARS || CONTROL.test(jti)
  ) {
    throw new TypeError(
      `jti must be 1-${MAX_JTI_CHARS} printable characters, got ${
        JSON.stringify(jti)?.slice(0, 80)
      }`,
    );
  }
}

/** A duration string or ms, at least 1 s and at most `maxMs`. */
function durationMs(
  field: string,
  value: string | number,
  maxMs: number,
): number {
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value) || value < 1000 || value > maxMs) {
      throw new RangeError(
        `${field} must be a whole number of ms from 1000 to ${maxMs}, got ${value}`,
      );
    }
    return value;
  }
  try {
    return parseDuration(value, { minMs: 1000, maxMs });
  } catch (err) {
    (err as Error).message = `${field}: ${(err as Error).message}`;
    throw err;
  }
}
