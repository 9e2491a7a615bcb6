/**
 * Helpers for the HTTP attack suite: in-process nodes on temp folders,
 * token forging, hand-made RFC 9421 signatures, raw HTTP/1.1 over TCP (for
 * what `fetch` refuses to send) and the checks every case shares.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type JWTHeaderParameters, type JWTPayload, SignJWT } from "jose";
import { loadConfig } from "../../core/config.ts";
import { type NodeHandle, startNode } from "../../core/node.ts";
import { BUILTINS } from "../../builtins.ts";
import {
  createSignatureBase,
  messageFromRequest,
  type SignatureKey,
} from "../../core/security/http_signatures/mod.ts";
import type { Role } from "../../core/security/roles.ts";

/** A node started for the suite, with the folder it lives in. */
export interface TestNode {
  url: string;
  handle: NodeHandle;
  /** Its data dir (and the config file). */
  dir: string;
  close(): Promise<void>;
}

/** Options for {@linkcode startTestNode}. */
export interface TestNodeOptions {
  /** The JSON config file's content (`auth`, `rateLimit`, `http`, ...). @default {{}} */
  config?: Record<string, unknown>;
  /** KV file; shared between nodes to make a cluster. @default {DIR/plexus.kv} */
  kv?: string;
}

/** Starts a real node (Deno.serve on loopback, real KV file) in this process. */
export async function startTestNode(
  options: TestNodeOptions = {},
): Promise<TestNode> {
  const dir = await Deno.makeTempDir({ prefix: "plexus-attack-" });
  try {
    const file = join(dir, "config.json");
    await Deno.writeTextFile(file, JSON.stringify(options.config ?? {}));
    const parsed = loadConfig([
      "--port",
      "0",
      "--kv",
      options.kv ?? join(dir, "plexus.kv"),
      "--data-dir",
      dir,
      "--plugins-dir",
      join(dir, "plugins.d"),
      "--log-level",
      "error",
      "--shutdown-timeout",
      "2000",
      "--config",
      file,
    ], { env: {} });
    if (parsed.help) throw new Error("unexpected --help");
    const handle = await startNode(parsed.config, {
      sinks: [],
      builtins: BUILTINS,
    });
    return {
      url: handle.url,
      handle,
      dir,
      close: async () => {
        try {
          await handle.shutdown("test done");
        } finally {
          await Deno.remove(dir, { recursive: true }).catch(() => {});
        }
      },
    };
  } catch (err) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw err;
  }
}

/** A response read once: status, headers and the body as text. */
export interface Observed {
  status: number;
  headers: Headers;
  text: string;
  /** From raw TCP: the HTTP server answered, not the app (no app headers). */
  raw?: boolean;
}

/** Reads `res` into an {@linkcode Observed}. */
export async function observe(res: Response | Observed): Promise<Observed> {
  if (!(res instanceof Response)) return res;
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** The parsed JSON body of an observed response. */
export function json<T = Record<string, unknown>>(o: Observed): T {
  return JSON.parse(o.text) as T;
}

/** Seconds since the epoch. */
export function nowS(): number {
  return Math.floor(Date.now() / 1000);
}

/** base64url without padding. */
export function b64url(data: Uint8Array | string): string {
  const bytes = typeof data === "string"
    ? new TextEncoder().encode(data)
    : data;
  return bytes.toBase64({ alphabet: "base64url", omitPadding: true });
}

/** Bytes of a base64url string. */
export function fromB64url(text: string): Uint8Array<ArrayBuffer> {
  return Uint8Array.fromBase64(text, { alphabet: "base64url" });
}

/** Every claim an API token needs, valid now; `extra` overrides or adds. */
export function tokenClaims(
  sub: string,
  role: Role | unknown,
  extra: Record<string, unknown> = {},
): JWTPayload {
  const iat = nowS();
  return {
    iss: "plexus",
    aud: "plexus-api",
    sub,
    role,
    jti: crypto.randomUUID(),
    iat,
    exp: iat + 600,
    ...extra,
  };
}

/** Signs a JWT with any header and claims (jose checks neither on signing). */
export async function mintJwt(
  key: CryptoKey | Uint8Array,
  header: JWTHeaderParameters,
  claims: JWTPayload,
): Promise<string> {
  return await new SignJWT(claims).setProtectedHeader(header).sign(key);
}

/** An unsigned (`alg: none`) JWT: header and claims, empty signature. */
export function unsignedJwt(
  header: Record<string, unknown>,
  claims: JWTPayload,
): string {
  return `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}.`;
}

/** A fresh Ed25519 pair with its raw public key. */
export async function ed25519Pair(): Promise<{
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  raw: Uint8Array<ArrayBuffer>;
}> {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const raw = new Uint8Array(
    await crypto.subtle.exportKey("raw", pair.publicKey),
  );
  return { privateKey: pair.privateKey, publicKey: pair.publicKey, raw };
}

/** An HMAC-SHA256 key for signing from raw secret bytes. */
export async function hmacKey(secret: Uint8Array<ArrayBuffer>) {
  return await crypto.subtle.importKey(
    "raw",
    secret,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
}

/** Options for {@linkcode handSign}. */
export interface HandSignOptions {
  /** The serialized inner list, e.g. `("@method");created=1;keyid="k"`. */
  params: string;
  /** Signs the base; or fixed signature bytes (forgeries). */
  key: SignatureKey | Uint8Array<ArrayBuffer>;
  /** @default {"sig1"} */
  label?: string;
}

/**
 * Signature headers made by hand from any `Signature-Input` parameters, for
 * what `signRequest` refuses to produce (an `alg` that disagrees with the
 * key, a forged signature).
 */
export async function handSign(
  request: Request,
  options: HandSignOptions,
): Promise<{ "signature-input": string; signature: string }> {
  const label = options.label ?? "sig1";
  const base = createSignatureBase(
    messageFromRequest(request),
    options.params,
  );
  let sig: Uint8Array;
  if (options.key instanceof Uint8Array) sig = options.key;
  else {
    const name = options.key.alg === "ed25519" ? "Ed25519" : "HMAC";
    sig = new Uint8Array(
      await crypto.subtle.sign(
        name,
        options.key.key,
        new TextEncoder().encode(base),
      ),
    );
  }
  return {
    "signature-input": `${label}=${options.params}`,
    signature: `${label}=:${sig.toBase64()}:`,
  };
}

/** Headers of `request` as a plain record (to resend them elsewhere). */
export function headersOf(request: Request): Record<string, string> {
  return Object.fromEntries(request.headers);
}

/**
 * Sends `head` (request line and header lines, without the final blank
 * line) plus `body` over a fresh TCP connection and reads the answer: for a
 * `101` only its head, otherwise up to the end of the body.
 */
export async function rawHttp(
  url: string,
  head: string,
  body: Uint8Array = new Uint8Array(),
): Promise<Observed> {
  const { hostname, port } = new URL(url);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  try {
    const enc = new TextEncoder();
    const lines = head.replace(/\r?\n$/, "").split(/\r?\n/);
    const bytes = enc.encode(lines.join("\r\n") + "\r\n\r\n");
    const all = new Uint8Array(bytes.length + body.length);
    all.set(bytes);
    all.set(body, bytes.length);
    await conn.write(all);
    let buf = new Uint8Array(0);
    const chunk = new Uint8Array(16 * 1024);
    const append = (n: number) => {
      const next = new Uint8Array(buf.length + n);
      next.set(buf);
      next.set(chunk.subarray(0, n), buf.length);
      buf = next;
    };
    const latin = (b: Uint8Array) => String.fromCharCode(...b);
    let headEnd = -1;
    while (headEnd < 0) {
      const n = await conn.read(chunk);
      if (n === null) break;
      append(n);
      headEnd = latin(buf).indexOf("\r\n\r\n");
    }
    if (headEnd < 0) throw new Error(`no HTTP answer: '${latin(buf)}'`);
    const [statusLine, ...headerLines] = latin(buf.subarray(0, headEnd))
      .split("\r\n");
    const status = Number(statusLine.split(" ")[1]);
    const headers = new Headers();
    for (const line of headerLines) {
      const i = line.indexOf(":");
      headers.append(line.slice(0, i).trim(), line.slice(i + 1).trim());
    }
    let rest: Uint8Array = buf.subarray(headEnd + 4);
    if (status !== 101) {
      const length = headers.get("content-length");
      const chunked = headers.get("transfer-encoding")?.includes("chunked");
      const complete = () =>
        length !== null
          ? rest.length >= Number(length)
          : chunked
          ? latin(rest).endsWith("0\r\n\r\n")
          : false;
      while (!complete()) {
        const n = await conn.read(chunk);
        if (n === null) break;
        append(n);
        rest = buf.subarray(headEnd + 4);
      }
      if (chunked) rest = dechunk(rest);
    }
    return {
      status,
      headers,
      text: new TextDecoder().decode(rest),
      raw: true,
    };
  } finally {
    conn.close();
  }
}

function dechunk(data: Uint8Array): Uint8Array {
  const out: number[] = [];
  let i = 0;
  while (i < data.length) {
    let eol = i;
    while (
      eol < data.length - 1 && !(data[eol] === 13 && data[eol + 1] === 10)
    ) {
      eol++;
    }
    const size = parseInt(String.fromCharCode(...data.subarray(i, eol)), 16);
    if (!(size > 0)) break;
    out.push(...data.subarray(eol + 2, eol + 2 + size));
    i = eol + 2 + size + 2;
  }
  return new Uint8Array(out);
}

/** A WebSocket opening handshake to `/ws` over raw TCP (the status is what counts). */
export async function wsHandshake(url: string): Promise<Observed> {
  const key = crypto.getRandomValues(new Uint8Array(16)).toBase64();
  return await rawHttp(
    url,
    [
      "GET /ws HTTP/1.1",
      `Host: ${new URL(url).host}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      `Sec-WebSocket-Key: ${key}`,
      "Sec-WebSocket-Version: 13",
    ].join("\r\n"),
  );
}

/**
 * The security headers every app answer must carry (the OWASP REST set),
 * spelled out here rather than imported, so dropping one from the app fails.
 */
export const SECURITY_HEADERS: readonly [string, string][] = [
  ["content-security-policy", "frame-ancestors 'none'"],
  ["strict-transport-security", "max-age=15552000; includeSubDomains"],
  ["x-content-type-options", "nosniff"],
  ["x-frame-options", "DENY"],
  ["referrer-policy", "no-referrer"],
];

/** Every security header, with its value. */
export function assertSecurityHeaders(o: Observed, what: string): void {
  for (const [name, value] of SECURITY_HEADERS) {
    assert.equal(o.headers.get(name), value, `${what}: header ${name}`);
  }
}

// Differ per request (id, time, the IP limiter's remaining count).
const VARYING = new Set(["date", "x-request-id", "ratelimit"]);
// Set by the HTTP server for the connection, not by the app.
const HOP_BY_HOP = new Set(["connection", "keep-alive", "transfer-encoding"]);

/**
 * `o` is the same 401 as `baseline` (the no-credentials answer): byte for
 * byte the same body and challenge, and the same headers apart from the
 * per-request ones. Any difference would tell an attacker why it failed.
 */
export function assertUniform401(
  o: Observed,
  baseline: Observed,
  what: string,
): void {
  assert.equal(o.status, 401, what);
  assert.equal(o.text, baseline.text, `${what}: 401 body differs`);
  assert.equal(
    o.headers.get("www-authenticate"),
    baseline.headers.get("www-authenticate"),
    `${what}: WWW-Authenticate differs`,
  );
  const names = (h: Headers) =>
    [...h.keys()].filter((k) => !HOP_BY_HOP.has(k)).sort().join(",");
  assert.equal(names(o.headers), names(baseline.headers), `${what}: headers`);
  for (const [k, v] of baseline.headers) {
    if (!VARYING.has(k)) {
      assert.equal(o.headers.get(k), v, `${what}: header ${k} differs`);
    }
  }
}

/** `Object.prototype` in this realm (the server's) is untouched. */
export function assertNoPollution(what: string): void {
  assert.equal(
    (({}) as Record<string, unknown>).polluted,
    undefined,
    `${what}: ({}).polluted`,
  );
  assert.equal(
    (Object.prototype as Record<string, unknown>).polluted,
    undefined,
    `${what}: Object.prototype.polluted`,
  );
  assert.equal(
    Object.getOwnPropertyNames(Object.prototype).includes("polluted"),
    false,
    `${what}: own property on Object.prototype`,
  );
}
