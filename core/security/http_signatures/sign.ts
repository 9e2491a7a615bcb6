/**
 * Signing: RFC 9421 signatures over a message, a request or a response,
 * adding `Content-Digest` (RFC 9530) when there is a body.
 *
 * @module
 */
import { type Clock, systemClock } from "../../clock.ts";
import {
  createContentDigest,
  type DigestAlgorithm,
  verifyContentDigest,
} from "../content_digest.ts";
import {
  type Dictionary,
  type InnerList,
  item,
  type Parameters,
  parseDictionary,
  serializeDictionary,
  serializeInnerList,
} from "../_structured_fields.ts";
import { checkKey, type SignatureKey, signBase } from "./keys.ts";
import {
  bodyBytes,
  createSignatureBase,
  DEFAULT_REQUEST_COMPONENTS,
  DEFAULT_RESPONSE_COMPONENTS,
  messageFromRequest,
  parseComponent,
  type SignatureBaseOptions,
  type SignatureMessage,
} from "./signature_base.ts";

/** Options for {@linkcode signMessage}, {@linkcode signRequest} and {@linkcode signResponse}. */
export interface SignOptions extends SignatureBaseOptions {
  /** Ed25519 private key or HMAC-SHA256 secret. */
  key: SignatureKey;
  /**
   * Components to cover, in order (`"@method"`, `"content-type"`,
   * `'@query-param;name="id"'`, ...).
   * @default {the default request/response components, plus `content-type` when present and `content-digest` when there is a body}
   */
  components?: readonly string[];
  /** Label in `Signature-Input` and `Signature`. @default {"sig1"} */
  label?: string;
  /** `created`, in seconds since the epoch. @default {now, from `clock`} */
  created?: number;
  /** Adds `expires` = `created` + this. @default {undefined} (no `expires`) */
  expiresInSec?: number;
  /** A nonce string, true for 16 random bytes (base64url), false for none. @default {true} */
  nonce?: string | boolean;
  /** Application tag (`tag` parameter). @default {undefined} */
  tag?: string;
  /** Adds the `alg` parameter. @default {false} */
  includeAlg?: boolean;
  /**
   * For a message with a body: add `Content-Digest` with this algorithm if
   * the header is absent (an existing one must match the body); false to
   * leave the body unsigned. @default {"sha-256"}
   */
  contentDigest?: DigestAlgorithm | false;
  /** @default {systemClock} */
  clock?: Clock;
}

/** The two header members one signature adds. */
export interface SignedParts {
  label: string;
  /** The `Signature-Input` member, `label=(...);created=...`. */
  signatureInput: string;
  /** The `Signature` member, `label=:base64:`. */
  signature: string;
  /** The signature base that was signed. */
  base: string;
}

function randomNonce(): string {
  return crypto.getRandomValues(new Uint8Array(16)).toBase64({
    alphabet: "base64url",
    omitPadding: true,
  });
}

function checkLabel(label: string): void {
  if (!/^[a-z*][a-z0-9_\-.*]*$/.test(label)) {
    throw new TypeError(
      `Cannot sign: label must be a structured-field key, got '${label}'`,
    );
  }
}

/**
 * Signs `message` with the components and parameters given (no defaults
 * are added here: list every component). Returns the header members to add.
 *
 * @example Usage
 * ```ts
 * import { messageFromRequest, signMessage } from "./mod.ts";
 * const secret = await crypto.subtle.importKey(
 *   "raw", new Uint8Array(32).fill(7), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
 * const message = messageFromRequest(new Request("https://example.com/x"));
 * const parts = await signMessage(message, {
 *   key: { keyid: "k1", alg: "hmac-sha256", key: secret },
 *   components: ["@method", "@path"], created: 1700000000, nonce: false,
 * });
 * parts.signatureInput; // 'sig1=("@method" "@path");created=1700000000;keyid="k1"'
 * ```
 */
export async function signMessage(
  message: SignatureMessage,
  options: SignOptions,
): Promise<SignedParts> {
  const label = options.label ?? "sig1";
  checkLabel(label);
  const keyProblem = checkKey(options.key, "sign");
  if (keyProblem) throw new TypeError(`Cannot sign: ${keyProblem}`);
  const components = (options.components ?? []).map(parseComponent);
  const clock = options.clock ?? systemClock;
  const created = options.created ?? Math.floor(clock.now() / 1000);
  const params: Parameters = new Map();
  params.set("created", { type: "integer", value: created });
  if (options.expiresInSec !== undefined) {
    params.set("expires", {
      type: "integer",
      value: created + Math.ceil(options.expiresInSec),
    });
  }
  params.set("keyid", { type: "string", value: options.key.keyid });
  if (options.includeAlg) {
    params.set("alg", { type: "string", value: options.key.alg });
  }
  const nonce = options.nonce ?? true;
  if (nonce !== false) {
    params.set("nonce", {
      type: "string",
      value: nonce === true ? randomNonce() : nonce,
    });
  }
  if (options.tag !== undefined) {
    params.set("tag", { type: "string", value: options.tag });
  }
  const inner: InnerList = { kind: "inner-list", items: components, params };
  const base = createSignatureBase(message, inner, options);
  const signature = await signBase(options.key, base);
  const sigDict: Dictionary = new Map([[
    label,
    item({ type: "bytes", value: signature }),
  ]]);
  return {
    label,
    signatureInput: `${label}=${serializeInnerList(inner)}`,
    signature: serializeDictionary(sigDict),
    base,
  };
}

/** Adds Content-Digest when needed and returns the components to cover. */
async function prepareSigning(
  headers: Headers,
  body: Uint8Array<ArrayBuffer> | null,
  defaults: readonly string[],
  options: SignOptions,
): Promise<string[]> {
  const digestAlg = options.contentDigest ?? "sha-256";
  const hasBody = body !== null && body.length > 0;
  if (hasBody && digestAlg !== false) {
    const existing = headers.get("content-digest");
    if (existing === null) {
      headers.set(
        "content-digest",
        await createContentDigest(body, { algorithms: [digestAlg] }),
      );
    } else if (!(await verifyContentDigest(body, existing)).ok) {
      throw new TypeError(
        `Cannot sign: the existing Content-Digest does not match the body: '${existing}'`,
      );
    }
  }
  for (const name of ["signature-input", "signature"]) {
    const existing = headers.get(name);
    if (
      existing !== null &&
      parseDictionary(existing).has(options.label ?? "sig1")
    ) {
      throw new TypeError(
        `Cannot sign: label '${options.label ?? "sig1"}' is already in ${name}`,
      );
    }
  }
  if (options.components) return [...options.components];
  const components = [...defaults];
  if (headers.has("content-type")) components.push("content-type");
  if (hasBody && digestAlg !== false) components.push("content-digest");
  return components;
}

function addSignature(headers: Headers, parts: SignedParts): void {
  headers.append("signature-input", parts.signatureInput);
  headers.append("signature", parts.signature);
}

/**
 * Signs a request and returns a copy carrying `Signature-Input`,
 * `Signature` and (when there is a body) `Content-Digest`. The original's
 * body is handed to the copy.
 *
 * @example Usage
 * ```ts
 * import { signRequest } from "./mod.ts";
 * const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]) as CryptoKeyPair;
 * const signed = await signRequest(
 *   new Request("https://example.com/api/v1/tasks", { method: "POST", body: "{}" }),
 *   { key: { keyid: "node-1", alg: "ed25519", key: pair.privateKey } },
 * );
 * signed.headers.get("content-digest"); // "sha-256=:RBNvo1WzZ4oRRq0W9+hknpT7T8If536DEMBg9hyq/4o=:"
 * ```
 */
export async function signRequest(
  request: Request,
  options: SignOptions,
): Promise<Request> {
  const headers = new Headers(request.headers);
  const body = await bodyBytes(request);
  const components = await prepareSigning(
    headers,
    body,
    DEFAULT_REQUEST_COMPONENTS,
    options,
  );
  const message: SignatureMessage = {
    method: request.method,
    targetUri: request.url,
    fields: headers,
  };
  addSignature(headers, await signMessage(message, { ...options, components }));
  return new Request(request, { headers });
}

/** Options for {@linkcode signResponse}. */
export interface SignResponseOptions extends SignOptions {
  /** The request answered, for `;req` components. */
  request?: Request;
}

/**
 * Signs a response (covering `@status` by default) and returns a copy
 * carrying the signature headers and, when there is a body,
 * `Content-Digest`.
 *
 * @example Usage
 * ```ts
 * import { signResponse } from "./mod.ts";
 * const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]) as CryptoKeyPair;
 * const signed = await signResponse(Response.json({ ok: true }), {
 *   key: { keyid: "node-1", alg: "ed25519", key: pair.privateKey },
 * });
 * signed.headers.get("signature-input")?.startsWith('sig1=("@status" "content-type" "content-digest")'); // true
 * ```
 */
export async function signResponse(
  response: Response,
  options: SignResponseOptions,
): Promise<Response> {
  const headers = new Headers(response.headers);
  const body = await bodyBytes(response);
  const components = await prepareSigning(
    headers,
    body,
    DEFAULT_RESPONSE_COMPONENTS,
    options,
  );
  const message: SignatureMessage = {
    status: response.status,
    fields: headers,
    request: options.request ? messageFromRequest(options.request) : undefined,
  };
  addSignature(headers, await signMessage(message, { ...options, components }));
  return new Response(response.body, {
    status: response.status,
    statusText: response.statusText,
    headers,
  });
}
