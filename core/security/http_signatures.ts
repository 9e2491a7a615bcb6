/**
 * RFC 9421 HTTP Message Signatures with Ed25519 and HMAC-SHA256 (WebCrypto),
 * plus the verification policy Plexus applies: required components, maximum
 * age from `created`, `expires`, nonce replay protection in KV, `keyid`
 * resolved only to trusted keys, `alg` agreeing with the key, and
 * `Content-Digest` (RFC 9530) required whenever there is a body.
 *
 * Every verification failure carries the same public
 * {@linkcode VERIFICATION_FAILED_MESSAGE}, so callers cannot tell an unknown
 * key from a bad signature; the precise `reason` and `detail` are for logs.
 *
 * Deno's `Headers` joins repeated field lines with ", " before we see them,
 * so on a `Request`/`Response` `;bs` covers one joined instance; pass a
 * {@linkcode SignatureMessage} with separate instances when that matters.
 * Fetch exposes no trailers, so `;tr` needs a {@linkcode SignatureMessage}.
 *
 * @module
 */
import { type Clock, systemClock } from "../clock.ts";
import { signatureNonceKey } from "../state/keys.ts";
import { retryLocked } from "../state/store.ts";
import {
  createContentDigest,
  type DigestAlgorithm,
  verifyContentDigest,
} from "./content_digest.ts";
import {
  type BareItem,
  type Dictionary,
  type FieldType,
  type InnerList,
  type Item,
  item,
  type Parameters,
  parseDictionary,
  parseField,
  parseInnerList,
  parseItem,
  serializeDictionary,
  serializeField,
  serializeInnerList,
  serializeItem,
  serializeMember,
} from "./_structured_fields.ts";

/** Signature algorithms from the RFC 9421 registry that Plexus accepts. */
export type SignatureAlgorithm = "ed25519" | "hmac-sha256";

/**
 * A key with the id it is known by. For signing: an Ed25519 private key or
 * an HMAC-SHA256 secret; for verifying: an Ed25519 public key or the secret.
 */
export interface SignatureKey {
  keyid: string;
  /** Fixed per key by configuration, never taken from the message. */
  alg: SignatureAlgorithm;
  key: CryptoKey;
  /** The key owner (e.g. a `did:key`), reported in verification results. */
  agentDid?: string;
}

/**
 * Looks up a trusted (enrolled) key by `keyid`: null or undefined when there
 * is none. Throw only for infrastructure failures; the verifier lets those
 * propagate rather than turning them into a verification failure.
 */
export type ResolveKey = (
  keyid: string,
) =>
  | SignatureKey
  | null
  | undefined
  | Promise<SignatureKey | null | undefined>;

/**
 * Records that `nonce` was seen for `keyid`, remembered for `ttlSec`
 * (`Infinity`: forever). Resolves true the first time, false on a replay.
 */
export type NonceStore = (
  keyid: string,
  nonce: string,
  ttlSec: number,
) => Promise<boolean>;

/** Field lines by name: one string per field line (instance). */
export type FieldLines =
  | Headers
  | Record<string, string | readonly string[]>
  | Iterable<readonly [string, string]>;

/**
 * A message reduced to what a signature base reads. A request has
 * `method` and `targetUri`; a response has `status` and, for `;req`
 * components, the `request` it answers.
 */
export interface SignatureMessage {
  method?: string;
  /** Absolute target URI, e.g. `https://example.com/foo?x=1`. */
  targetUri?: string;
  status?: number;
  fields: FieldLines;
  /** Trailer fields; `;tr` components fail without them. */
  trailers?: FieldLines;
  /** The request a response answers (for `;req`). */
  request?: SignatureMessage;
}

/** Public message of every verification failure; see the `reason` for logs. */
export const VERIFICATION_FAILED_MESSAGE =
  "HTTP message signature verification failed";

/** What a request signature must cover unless the policy says otherwise. */
export const DEFAULT_REQUEST_COMPONENTS: readonly string[] = [
  "@method",
  "@authority",
  "@path",
  "@query",
];

/** What a response signature must cover unless the policy says otherwise. */
export const DEFAULT_RESPONSE_COMPONENTS: readonly string[] = ["@status"];

/** Fields with a known Structured Field type, for `;sf`. */
export const STRUCTURED_FIELD_TYPES: Readonly<Record<string, FieldType>> = {
  "accept-signature": "dictionary",
  "cache-status": "list",
  "content-digest": "dictionary",
  "priority": "dictionary",
  "proxy-status": "list",
  "repr-digest": "dictionary",
  "signature": "dictionary",
  "signature-input": "dictionary",
  "want-content-digest": "dictionary",
  "want-repr-digest": "dictionary",
};

// Bounds on attacker-controlled sizes, checked before any work scales with them.
const MAX_SIGNATURE_HEADER_CHARS = 8192;
const MAX_SIGNATURES = 8;
const MAX_COMPONENTS = 64;
const MAX_KEYID_CHARS = 256;
const MAX_NONCE_CHARS = 256;
const MIN_HMAC_KEY_BITS = 256;
const SIGNATURE_BYTES: Record<SignatureAlgorithm, number> = {
  "ed25519": 64,
  "hmac-sha256": 32,
};
const DERIVED = new Set([
  "@method",
  "@target-uri",
  "@authority",
  "@scheme",
  "@path",
  "@query",
  "@query-param",
  "@status",
]);
const FIELD_PARAMS = new Set(["sf", "key", "bs", "req", "tr"]);
const SIGNATURE_PARAMS: Record<string, BareItem["type"]> = {
  created: "integer",
  expires: "integer",
  nonce: "string",
  alg: "string",
  keyid: "string",
  tag: "string",
};
const FIELD_NAME_RE = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const encoder = new TextEncoder();

/** A base could not be built: the message lacks or garbles a covered component. */
export class SignatureBaseError extends Error {
  override name = "SignatureBaseError";
}

// ---------------------------------------------------------------- messages

type FieldMap = Map<string, string[]>;

function fieldMap(lines: FieldLines): FieldMap {
  const map: FieldMap = new Map();
  const add = (name: string, value: string) => {
    const key = name.toLowerCase();
    const list = map.get(key);
    if (list) list.push(value);
    else map.set(key, [value]);
  };
  if (lines instanceof Headers) {
    // Iterating Headers yields Set-Cookie lines one by one, the rest joined.
    for (const [name, value] of lines) add(name, value);
  } else if (Symbol.iterator in lines) {
    for (const [name, value] of lines as Iterable<readonly [string, string]>) {
      add(name, value);
    }
  } else {
    for (const [name, value] of Object.entries(lines)) {
      for (const v of typeof value === "string" ? [value] : value) add(name, v);
    }
  }
  return map;
}

/**
 * The parts of a request a signature base reads.
 *
 * @example Usage
 * ```ts
 * import { messageFromRequest } from "./http_signatures.ts";
 * const message = messageFromRequest(new Request("https://example.com/a?b=1"));
 * message.method; // "GET"
 * ```
 */
export function messageFromRequest(request: Request): SignatureMessage {
  return {
    method: request.method,
    targetUri: request.url,
    fields: request.headers,
  };
}

/** The parts of a response (and of the request it answers) a base reads. */
export function messageFromResponse(
  response: Response,
  request?: Request,
): SignatureMessage {
  return {
    status: response.status,
    fields: response.headers,
    request: request ? messageFromRequest(request) : undefined,
  };
}

// -------------------------------------------------------------- components

/**
 * Parses a component identifier: a bare name (`"@method"`,
 * `"content-type"`), a name with parameters (`'@query-param;name="id"'`), or
 * its serialized form (`'"@query-param";name="id"'`).
 */
function parseComponent(spec: string): Item {
  let source = spec;
  if (!spec.startsWith('"')) {
    const semi = spec.indexOf(";");
    const name = semi < 0 ? spec : spec.slice(0, semi);
    source = JSON.stringify(name) + (semi < 0 ? "" : spec.slice(semi));
  }
  const parsed = parseItem(source, { rejectDuplicates: true });
  checkComponent(parsed);
  return parsed;
}

/** The identity of a component: its name and its parameters in sorted order. */
function componentKey(component: Item): string {
  const params: Parameters = new Map(
    [...component.params].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  );
  return serializeItem(item(component.value, params));
}

function isFlag(value: BareItem | undefined): boolean {
  return value?.type === "boolean" && value.value;
}

/** Throws unless `component` is a well-formed identifier with allowed parameters. */
function checkComponent(component: Item): void {
  const bad = (why: string): never => {
    throw new SignatureBaseError(
      `Invalid component ${safeSerialize(component)}: ${why}`,
    );
  };
  if (component.value.type !== "string") bad("the name must be a string");
  const name = component.value.value as string;
  const params = component.params;
  if (name.startsWith("@")) {
    if (name === "@signature-params") bad("it cannot be covered");
    if (name === "@request-target") {
      bad(
        "@request-target depends on the HTTP/1.1 request form; cover @path and @query",
      );
    }
    if (!DERIVED.has(name)) bad("unknown derived component");
    for (const [key, value] of params) {
      if (key === "req") {
        if (!isFlag(value)) bad("'req' must be a flag");
      } else if (key === "name" && name === "@query-param") {
        if (value.type !== "string") bad("'name' must be a string");
      } else bad(`unknown parameter '${key}'`);
    }
    if (name === "@query-param" && !params.has("name")) {
      bad("@query-param needs a 'name' parameter");
    }
    return;
  }
  if (!FIELD_NAME_RE.test(name)) {
    bad("a field name must be a lowercase token");
  }
  for (const [key, value] of params) {
    if (!FIELD_PARAMS.has(key)) bad(`unknown parameter '${key}'`);
    if (key === "key") {
      if (value.type !== "string") bad("'key' must be a string");
    } else if (!isFlag(value)) bad(`'${key}' must be a flag`);
  }
  if (params.has("bs") && (params.has("sf") || params.has("key"))) {
    bad("'bs' cannot be combined with 'sf' or 'key'");
  }
}

function safeSerialize(component: Item): string {
  try {
    return serializeItem(component);
  } catch {
    return "(unserializable)";
  }
}

/** application/x-www-form-urlencoded percent-encoding, a space as %20 (RFC 9421 §2.2.8). */
function formEncode(text: string): string {
  return encodeURIComponent(text).replace(
    /[!'()~]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

function targetUrl(message: SignatureMessage, name: string): URL {
  if (message.status !== undefined || message.targetUri === undefined) {
    throw new SignatureBaseError(
      `${name} needs a request; on a response use ${name};req`,
    );
  }
  try {
    return new URL(message.targetUri);
  } catch {
    throw new SignatureBaseError(
      `Target URI is not absolute: '${message.targetUri}'`,
    );
  }
}

function derivedValue(
  message: SignatureMessage,
  name: string,
  params: Parameters,
): string {
  switch (name) {
    case "@method":
      if (message.status !== undefined || message.method === undefined) {
        throw new SignatureBaseError(
          "@method needs a request; on a response use @method;req",
        );
      }
      return message.method;
    case "@target-uri":
      return targetUrl(message, name).href;
    case "@authority":
      return targetUrl(message, name).host;
    case "@scheme":
      return targetUrl(message, name).protocol.slice(0, -1);
    case "@path":
      return targetUrl(message, name).pathname || "/";
    case "@query":
      return targetUrl(message, name).search || "?";
    case "@query-param": {
      const wanted = (params.get("name") as { value: string }).value;
      const search = targetUrl(message, name).search;
      const values: string[] = [];
      for (const [k, v] of new URLSearchParams(search)) {
        if (formEncode(k) === wanted) values.push(v);
      }
      if (values.length !== 1) {
        throw new SignatureBaseError(
          `Query parameter '${wanted}' occurs ${values.length} times; it must occur exactly once`,
        );
      }
      return formEncode(values[0]);
    }
    case "@status": {
      const status = message.status;
      if (status === undefined) {
        throw new SignatureBaseError("@status is only defined for a response");
      }
      if (!Number.isInteger(status) || status < 100 || status > 999) {
        throw new SignatureBaseError(`Status is not 3 digits: ${status}`);
      }
      return String(status);
    }
  }
  throw new SignatureBaseError(`Unknown derived component '${name}'`);
}

function fieldValue(
  message: SignatureMessage,
  name: string,
  params: Parameters,
  sfTypes: Readonly<Record<string, FieldType>>,
): string {
  let lines = message.fields;
  if (params.has("tr")) {
    if (message.trailers === undefined) {
      throw new SignatureBaseError(
        `Trailer '${name}' is covered but the message has no trailers`,
      );
    }
    lines = message.trailers;
  }
  const instances = fieldMap(lines).get(name);
  if (instances === undefined) {
    throw new SignatureBaseError(`Field '${name}' is covered but missing`);
  }
  const values = instances.map((v) =>
    v.replace(/\r?\n[ \t]+/g, " ").replace(/^[ \t]+|[ \t]+$/g, "")
  );
  if (params.has("bs")) {
    return values.map((v) => {
      if ([...v].some((c) => c.charCodeAt(0) > 0xff)) {
        throw new SignatureBaseError(`Field '${name}' is not bytes`);
      }
      const bytes = Uint8Array.from(v, (c) => c.charCodeAt(0));
      return serializeItem(item({ type: "bytes", value: bytes }));
    }).join(", ");
  }
  const joined = values.join(", ");
  try {
    const key = params.get("key");
    if (key !== undefined) {
      const dict = parseDictionary(joined);
      const member = dict.get((key as { value: string }).value);
      if (member === undefined) {
        throw new SignatureBaseError(
          `Field '${name}' has no dictionary key '${
            (key as { value: string }).value
          }'`,
        );
      }
      return serializeMember(member);
    }
    if (params.has("sf")) {
      const type = sfTypes[name];
      if (type === undefined) {
        throw new SignatureBaseError(
          `Field '${name}' has no known structured type for ';sf'`,
        );
      }
      return serializeField(parseField(joined, type), type);
    }
  } catch (err) {
    if (err instanceof SignatureBaseError) throw err;
    throw new SignatureBaseError(
      `Field '${name}' is not a valid structured field: ${
        (err as Error).message
      }`,
      { cause: err },
    );
  }
  return joined;
}

function componentValue(
  message: SignatureMessage,
  component: Item,
  sfTypes: Readonly<Record<string, FieldType>>,
): string {
  const name = component.value.value as string;
  let target = message;
  if (component.params.has("req")) {
    if (message.status === undefined) {
      throw new SignatureBaseError(
        `${name};req is only defined when signing a response`,
      );
    }
    if (message.request === undefined) {
      throw new SignatureBaseError(
        `${name};req is covered but the request is not available`,
      );
    }
    target = message.request;
  }
  const value = name.startsWith("@")
    ? derivedValue(target, name, component.params)
    : fieldValue(target, name, component.params, sfTypes);
  if (!/^[\t\x20-\x7e]*$/.test(value)) {
    throw new SignatureBaseError(
      `Component ${
        serializeItem(component)
      } has characters outside visible ASCII`,
    );
  }
  return value;
}

/** Options for {@linkcode createSignatureBase}. */
export interface SignatureBaseOptions {
  /**
   * Structured types of fields beyond {@linkcode STRUCTURED_FIELD_TYPES},
   * for `;sf`. @default {{}}
   */
  structuredFieldTypes?: Readonly<Record<string, FieldType>>;
}

/**
 * The RFC 9421 §2.5 signature base of `message` for `signatureParams` (the
 * inner list of a `Signature-Input` member, as a string or parsed): one line
 * per covered component, then `"@signature-params"`, with no final LF.
 * Throws {@linkcode SignatureBaseError} when a component is invalid, missing
 * or repeated.
 *
 * @example Usage
 * ```ts
 * import { createSignatureBase, messageFromRequest } from "./http_signatures.ts";
 * const request = new Request("https://example.com/foo", { method: "POST" });
 * createSignatureBase(messageFromRequest(request), '("@method" "@path");created=1');
 * // '"@method": POST\n"@path": /foo\n"@signature-params": ("@method" "@path");created=1'
 * ```
 */
export function createSignatureBase(
  message: SignatureMessage,
  signatureParams: string | InnerList,
  options: SignatureBaseOptions = {},
): string {
  let params: InnerList;
  try {
    params = typeof signatureParams === "string"
      ? parseInnerList(signatureParams, { rejectDuplicates: true })
      : signatureParams;
  } catch (err) {
    throw new SignatureBaseError((err as Error).message, { cause: err });
  }
  if (params.items.length > MAX_COMPONENTS) {
    throw new SignatureBaseError(
      `Too many covered components: ${params.items.length} > ${MAX_COMPONENTS}`,
    );
  }
  const sfTypes = {
    ...STRUCTURED_FIELD_TYPES,
    ...options.structuredFieldTypes,
  };
  const seen = new Set<string>();
  const lines: string[] = [];
  for (const component of params.items) {
    checkComponent(component);
    const key = componentKey(component);
    if (seen.has(key)) {
      throw new SignatureBaseError(`Component ${key} is covered twice`);
    }
    seen.add(key);
    lines.push(
      `${serializeItem(component)}: ${
        componentValue(message, component, sfTypes)
      }`,
    );
  }
  lines.push(`"@signature-params": ${serializeInnerList(params)}`);
  return lines.join("\n");
}

// ----------------------------------------------------------------- crypto

function checkKey(key: SignatureKey, use: "sign" | "verify"): string | null {
  const algorithm = key.key.algorithm as KeyAlgorithm & {
    hash?: { name: string };
    length?: number;
  };
  if (!key.key.usages.includes(use)) {
    return `key '${key.keyid}' may not be used to ${use}`;
  }
  if (key.alg === "ed25519") {
    const wanted = use === "sign" ? "private" : "public";
    if (algorithm.name !== "Ed25519" || key.key.type !== wanted) {
      return `key '${key.keyid}' is not an Ed25519 ${wanted} key`;
    }
    return null;
  }
  if (key.alg === "hmac-sha256") {
    if (
      algorithm.name !== "HMAC" || algorithm.hash?.name !== "SHA-256" ||
      key.key.type !== "secret"
    ) return `key '${key.keyid}' is not an HMAC-SHA256 secret`;
    if ((algorithm.length ?? 0) < MIN_HMAC_KEY_BITS) {
      return `key '${key.keyid}' is shorter than ${MIN_HMAC_KEY_BITS} bits`;
    }
    return null;
  }
  return `key '${key.keyid}' has unsupported alg '${key.alg}'`;
}

function webCryptoName(alg: SignatureAlgorithm): string {
  return alg === "ed25519" ? "Ed25519" : "HMAC";
}

async function signBase(key: SignatureKey, base: string): Promise<Uint8Array> {
  return new Uint8Array(
    await crypto.subtle.sign(
      webCryptoName(key.alg),
      key.key,
      encoder.encode(base),
    ),
  );
}

async function verifyBase(
  key: SignatureKey,
  base: string,
  signature: Uint8Array<ArrayBuffer>,
): Promise<boolean> {
  if (signature.length !== SIGNATURE_BYTES[key.alg]) return false;
  return await crypto.subtle.verify(
    webCryptoName(key.alg),
    key.key,
    signature,
    encoder.encode(base),
  );
}

let dummyKey: Promise<CryptoKey> | undefined;

/** Spends about one verification's time, so an unknown keyid is not faster. */
async function dummyVerify(base: string): Promise<void> {
  dummyKey ??= crypto.subtle.generateKey({ name: "Ed25519" }, false, [
    "sign",
    "verify",
  ]).then((pair) => (pair as CryptoKeyPair).publicKey);
  await crypto.subtle.verify(
    "Ed25519",
    await dummyKey,
    new Uint8Array(64),
    encoder.encode(base),
  );
}

// ---------------------------------------------------------------- signing

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
 * import { messageFromRequest, signMessage } from "./http_signatures.ts";
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

async function bodyBytes(
  message: Request | Response,
): Promise<Uint8Array<ArrayBuffer> | null> {
  if (message.body === null) return null;
  return new Uint8Array(await message.clone().arrayBuffer());
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
 * import { signRequest } from "./http_signatures.ts";
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
 * import { signResponse } from "./http_signatures.ts";
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

// ------------------------------------------------------------ verification

/** What an accepted signature must satisfy. */
export interface VerificationPolicy extends SignatureBaseOptions {
  /**
   * Components the signature must cover (same spellings as
   * {@linkcode SignOptions.components}); `content-digest` is added when
   * `requireContentDigest` applies.
   * @default {DEFAULT_REQUEST_COMPONENTS or DEFAULT_RESPONSE_COMPONENTS}
   */
  requiredComponents?: readonly string[];
  /** Oldest acceptable `created`, in seconds before now (`Infinity`: no limit). @default {300} */
  maxAgeSec?: number;
  /** Tolerated clock difference for a future `created` and for `expires`. @default {5} */
  clockSkewSec?: number;
  /** Require the `expires` parameter. @default {false} */
  requireExpires?: boolean;
  /** Require the `nonce` parameter (then `nonceStore` is required too). @default {false} */
  requireNonce?: boolean;
  /** Replay store; every signature with a nonce is checked against it. @default {undefined} */
  nonceStore?: NonceStore;
  /**
   * `"when-body"`: a message with a non-empty body must cover a matching
   * `Content-Digest`; true: every message must; false: only a covered one
   * is checked. @default {"when-body"}
   */
  requireContentDigest?: boolean | "when-body";
  /** Digest algorithms accepted in `Content-Digest`. @default {["sha-256", "sha-512"]} */
  digestAlgorithms?: readonly DigestAlgorithm[];
  /** Consider only signatures whose `tag` parameter equals this. @default {undefined} */
  tag?: string;
  /** Consider only the signature with this label. @default {undefined} */
  label?: string;
  /** @default {systemClock} */
  clock?: Clock;
}

/** Options for {@linkcode verifyMessage}, {@linkcode verifyRequest} and {@linkcode verifyResponse}. */
export interface VerifyOptions extends VerificationPolicy {
  /** Returns only trusted keys. */
  resolveKey: ResolveKey;
}

/** Why a verification failed (for logs and metrics, never for callers). */
export type VerificationFailureReason =
  | "missing-signature"
  | "malformed-signature"
  | "no-matching-signature"
  | "ambiguous-signature"
  | "missing-parameter"
  | "invalid-component"
  | "missing-component"
  | "created-in-future"
  | "too-old"
  | "expired"
  | "unknown-key"
  | "unusable-key"
  | "algorithm-mismatch"
  | "bad-signature"
  | "missing-content-digest"
  | "content-digest-mismatch"
  | "replayed-nonce";

/** An accepted signature. */
export interface VerificationSuccess {
  verified: true;
  signatureValid: true;
  label: string;
  keyid: string;
  alg: SignatureAlgorithm;
  agentDid?: string;
  /** Seconds since the epoch. */
  created: number;
  expires?: number;
  nonce?: string;
  tag?: string;
  /** Covered component identifiers, serialized, in signed order. */
  components: string[];
  /** Wall-clock ms of the verification. */
  timestamp: number;
}

/** A refused message. Show callers only `message`. */
export interface VerificationFailure {
  verified: false;
  /** Whether the cryptographic check passed (it failed on policy after it). */
  signatureValid: boolean;
  message: typeof VERIFICATION_FAILED_MESSAGE;
  reason: VerificationFailureReason;
  /** Precise, for logs only. */
  detail: string;
  label?: string;
  keyid?: string;
  timestamp: number;
}

/** Outcome of a verification. */
export type VerificationResult = VerificationSuccess | VerificationFailure;

/** Message parts and body for {@linkcode verifyMessage}. */
export interface VerifiableMessage extends SignatureMessage {
  /** The content as received; null or absent when there is no body. */
  body?: Uint8Array<ArrayBuffer> | null;
}

class Refusal {
  constructor(
    readonly reason: VerificationFailureReason,
    readonly detail: string,
    readonly signatureValid = false,
  ) {}
}

function refuse(
  reason: VerificationFailureReason,
  detail: string,
  signatureValid = false,
): never {
  throw new Refusal(reason, detail, signatureValid);
}

function checkPolicy(options: VerifyOptions): void {
  if (typeof options.resolveKey !== "function") {
    throw new TypeError("Cannot verify: 'resolveKey' must be a function");
  }
  if (options.requireNonce && !options.nonceStore) {
    throw new TypeError(
      "Cannot verify: 'requireNonce' needs a 'nonceStore' to detect replays",
    );
  }
  try {
    options.requiredComponents?.forEach(parseComponent);
  } catch (err) {
    throw new TypeError(
      `Cannot verify: invalid 'requiredComponents': ${(err as Error).message}`,
      { cause: err },
    );
  }
  for (
    const [name, value] of [
      ["maxAgeSec", options.maxAgeSec],
      ["clockSkewSec", options.clockSkewSec],
    ] as const
  ) {
    if (value !== undefined && !(value >= 0)) {
      throw new RangeError(
        `Cannot verify: '${name}' must be >= 0, got ${value}`,
      );
    }
  }
}

interface Candidate {
  label: string;
  input: InnerList;
  signature: Uint8Array<ArrayBuffer>;
  params: {
    created: number;
    expires?: number;
    nonce?: string;
    alg?: string;
    keyid: string;
    tag?: string;
  };
}

function headerValue(fields: FieldMap, name: string): string | null {
  const values = fields.get(name);
  return values === undefined ? null : values.join(", ");
}

function pickCandidate(
  fields: FieldMap,
  policy: VerificationPolicy,
): Candidate {
  const inputHeader = headerValue(fields, "signature-input");
  const sigHeader = headerValue(fields, "signature");
  if (inputHeader === null && sigHeader === null) {
    refuse("missing-signature", "no Signature-Input and no Signature header");
  }
  if (inputHeader === null) {
    refuse("missing-signature", "Signature without Signature-Input");
  }
  if (sigHeader === null) {
    refuse("missing-signature", "Signature-Input without Signature");
  }
  if (
    inputHeader.length > MAX_SIGNATURE_HEADER_CHARS ||
    sigHeader.length > MAX_SIGNATURE_HEADER_CHARS
  ) {
    refuse(
      "malformed-signature",
      `signature headers over ${MAX_SIGNATURE_HEADER_CHARS} characters`,
    );
  }
  let inputs: Dictionary, sigs: Dictionary;
  try {
    inputs = parseDictionary(inputHeader, { rejectDuplicates: true });
    sigs = parseDictionary(sigHeader, { rejectDuplicates: true });
  } catch (err) {
    refuse("malformed-signature", (err as Error).message);
  }
  if (inputs.size > MAX_SIGNATURES) {
    refuse("malformed-signature", `over ${MAX_SIGNATURES} signatures`);
  }
  for (const label of inputs.keys()) {
    if (!sigs.has(label)) {
      refuse(
        "malformed-signature",
        `label '${label}' is in Signature-Input but not in Signature`,
      );
    }
  }
  for (const label of sigs.keys()) {
    if (!inputs.has(label)) {
      refuse(
        "malformed-signature",
        `label '${label}' is in Signature but not in Signature-Input`,
      );
    }
  }
  const matching: string[] = [];
  for (const [label, member] of inputs) {
    if (policy.label !== undefined && label !== policy.label) continue;
    if (policy.tag !== undefined) {
      const tag = member.params.get("tag");
      if (tag?.type !== "string" || tag.value !== policy.tag) continue;
    }
    matching.push(label);
  }
  if (matching.length === 0) {
    refuse(
      "no-matching-signature",
      `no signature has label ${policy.label ?? "(any)"} and tag ${
        policy.tag ?? "(any)"
      }; labels: ${[...inputs.keys()].join(", ")}`,
    );
  }
  if (matching.length > 1) {
    refuse(
      "ambiguous-signature",
      `${matching.length} signatures match (${
        matching.join(", ")
      }); set the policy's tag or label`,
    );
  }
  const label = matching[0];
  const input = inputs.get(label)!;
  const sig = sigs.get(label)!;
  if (input.kind !== "inner-list") {
    refuse(
      "malformed-signature",
      `Signature-Input '${label}' is not an inner list`,
    );
  }
  if (sig.kind !== "item" || sig.value.type !== "bytes" || sig.params.size) {
    refuse(
      "malformed-signature",
      `Signature '${label}' is not a byte sequence without parameters`,
    );
  }
  const params: Record<string, string | number> = {};
  for (const [key, value] of input.params) {
    const type = SIGNATURE_PARAMS[key];
    if (type === undefined) {
      refuse("malformed-signature", `unknown signature parameter '${key}'`);
    }
    if (value.type !== type) {
      refuse(
        "malformed-signature",
        `signature parameter '${key}' must be of type ${type}`,
      );
    }
    params[key] = value.value as string | number;
  }
  if (params.created === undefined) {
    refuse("missing-parameter", `signature '${label}' has no 'created'`);
  }
  if (params.keyid === undefined) {
    refuse("missing-parameter", `signature '${label}' has no 'keyid'`);
  }
  if ((params.keyid as string).length > MAX_KEYID_CHARS) {
    refuse("malformed-signature", `keyid over ${MAX_KEYID_CHARS} characters`);
  }
  if (
    params.nonce !== undefined &&
    (params.nonce as string).length > MAX_NONCE_CHARS
  ) {
    refuse("malformed-signature", `nonce over ${MAX_NONCE_CHARS} characters`);
  }
  return {
    label,
    input,
    signature: new Uint8Array(sig.value.value),
    params: params as Candidate["params"],
  };
}

/**
 * Verifies one signature on `message` against `options` (see
 * {@linkcode VerificationPolicy}). Never throws for a bad message: failures
 * come back as a {@linkcode VerificationFailure}. Throws for a misconfigured
 * policy and lets errors of `resolveKey` and `nonceStore` propagate.
 *
 * Checks run cheapest first: headers and parameters, time, coverage, base,
 * key, signature, then `Content-Digest` and the nonce (recorded only once
 * everything else has passed).
 *
 * @example Usage
 * ```ts
 * import { ManualClock } from "../clock.ts";
 * import { signMessage, verifyMessage } from "./http_signatures.ts";
 * const secret = await crypto.subtle.importKey(
 *   "raw", new Uint8Array(32).fill(7), { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
 * const key = { keyid: "k1", alg: "hmac-sha256" as const, key: secret };
 * const message = { method: "GET", targetUri: "https://example.com/x", fields: {} };
 * const parts = await signMessage(message, {
 *   key, components: ["@method", "@authority", "@path", "@query"], created: 1000,
 * });
 * const result = await verifyMessage(
 *   { ...message, fields: { "signature-input": parts.signatureInput, signature: parts.signature } },
 *   { resolveKey: (id) => (id === "k1" ? key : null), clock: new ManualClock(1000_000) },
 * );
 * result.verified; // true
 * ```
 */
export async function verifyMessage(
  message: VerifiableMessage,
  options: VerifyOptions,
): Promise<VerificationResult> {
  checkPolicy(options);
  const clock = options.clock ?? systemClock;
  const now = clock.now();
  let label: string | undefined;
  let keyid: string | undefined;
  let signatureValid = false;
  try {
    const fields = fieldMap(message.fields);
    const candidate = pickCandidate(fields, options);
    ({ label } = candidate);
    const { params } = candidate;
    keyid = params.keyid;

    const maxAgeSec = options.maxAgeSec ?? 300;
    const skewMs = (options.clockSkewSec ?? 5) * 1000;
    if (params.created * 1000 > now + skewMs) {
      refuse(
        "created-in-future",
        `created ${params.created} is after now (${now} ms)`,
      );
    }
    if (now - params.created * 1000 > maxAgeSec * 1000) {
      refuse(
        "too-old",
        `created ${params.created} is over ${maxAgeSec} s before now (${now} ms)`,
      );
    }
    if (params.expires !== undefined && now > params.expires * 1000 + skewMs) {
      refuse("expired", `expires ${params.expires} is before now (${now} ms)`);
    }
    if (options.requireExpires && params.expires === undefined) {
      refuse("missing-parameter", "no 'expires' parameter");
    }
    if (options.requireNonce && params.nonce === undefined) {
      refuse("missing-parameter", "no 'nonce' parameter");
    }

    const body = message.body ?? null;
    const hasBody = body !== null && body.length > 0;
    const digestPolicy = options.requireContentDigest ?? "when-body";
    const required = [
      ...(options.requiredComponents ??
        (message.status === undefined
          ? DEFAULT_REQUEST_COMPONENTS
          : DEFAULT_RESPONSE_COMPONENTS)),
    ];
    if (digestPolicy === true || (digestPolicy === "when-body" && hasBody)) {
      required.push("content-digest");
    }
    const covered = new Set(candidate.input.items.map(componentKey));
    for (const spec of required) {
      const key = componentKey(parseComponent(spec));
      if (!covered.has(key)) {
        refuse(
          key === '"content-digest"'
            ? "missing-content-digest"
            : "missing-component",
          `signature '${label}' does not cover ${key}`,
        );
      }
    }

    let base: string;
    try {
      base = createSignatureBase(message, candidate.input, options);
    } catch (err) {
      refuse("invalid-component", (err as Error).message);
    }

    const key = await options.resolveKey(params.keyid);
    if (!key || key.keyid !== params.keyid) {
      await dummyVerify(base);
      refuse("unknown-key", `no trusted key '${params.keyid}'`);
    }
    const keyProblem = checkKey(key, "verify");
    if (keyProblem) refuse("unusable-key", keyProblem);
    if (params.alg !== undefined && params.alg !== key.alg) {
      refuse(
        "algorithm-mismatch",
        `alg '${params.alg}' but key '${key.keyid}' is ${key.alg}`,
      );
    }
    if (!(await verifyBase(key, base, candidate.signature))) {
      refuse(
        "bad-signature",
        `signature '${label}' does not verify with key '${key.keyid}'`,
      );
    }
    signatureValid = true;

    const coversDigest = candidate.input.items.some((c) =>
      c.value.value === "content-digest" && !c.params.has("req") &&
      !c.params.has("tr")
    );
    if (coversDigest) {
      const digest = await verifyContentDigest(
        body ?? new Uint8Array(),
        headerValue(fields, "content-digest"),
        { algorithms: options.digestAlgorithms },
      );
      if (!digest.ok) refuse("content-digest-mismatch", digest.reason, true);
    }

    if (params.nonce !== undefined && options.nonceStore) {
      const windowSec = Math.min(
        maxAgeSec + skewMs / 1000,
        params.expires === undefined
          ? Infinity
          : params.expires - now / 1000 + skewMs / 1000,
      );
      // +1 s: `created` has whole seconds, `now` has milliseconds.
      const ttlSec = Number.isFinite(windowSec)
        ? Math.ceil(windowSec) + 1
        : Infinity;
      if (!(await options.nonceStore(params.keyid, params.nonce, ttlSec))) {
        refuse(
          "replayed-nonce",
          `nonce '${params.nonce}' was already used by '${params.keyid}'`,
          true,
        );
      }
    }

    return {
      verified: true,
      signatureValid: true,
      label: candidate.label,
      keyid: key.keyid,
      alg: key.alg,
      agentDid: key.agentDid,
      created: params.created,
      expires: params.expires,
      nonce: params.nonce,
      tag: params.tag,
      components: candidate.input.items.map(serializeItem),
      timestamp: now,
    };
  } catch (err) {
    if (!(err instanceof Refusal)) throw err;
    return {
      verified: false,
      signatureValid: err.signatureValid || signatureValid,
      message: VERIFICATION_FAILED_MESSAGE,
      reason: err.reason,
      detail: err.detail,
      label,
      keyid,
      timestamp: now,
    };
  }
}

/**
 * Verifies a request's signature (and its body against `Content-Digest`,
 * read from a clone so the handler can still read it).
 *
 * @example Usage
 * ```ts
 * import { signRequest, verifyRequest } from "./http_signatures.ts";
 * const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]) as CryptoKeyPair;
 * const signed = await signRequest(
 *   new Request("https://example.com/api/v1/tasks", { method: "POST", body: "{}" }),
 *   { key: { keyid: "node-1", alg: "ed25519", key: pair.privateKey } },
 * );
 * const trusted = { keyid: "node-1", alg: "ed25519" as const, key: pair.publicKey };
 * const result = await verifyRequest(signed, {
 *   resolveKey: (keyid) => (keyid === trusted.keyid ? trusted : null),
 * });
 * result.verified; // true
 * ```
 */
export async function verifyRequest(
  request: Request,
  options: VerifyOptions,
): Promise<VerificationResult> {
  return await verifyMessage(
    { ...messageFromRequest(request), body: await bodyBytes(request) },
    options,
  );
}

/** Options for {@linkcode verifyResponse}. */
export interface VerifyResponseOptions extends VerifyOptions {
  /** The request the response answers, for `;req` components. */
  request?: Request;
}

/**
 * Verifies a response's signature (covering `@status` by default). The
 * body is read from a clone. A fetch client decodes `Content-Encoding`, so
 * the digest of an encoded response will not match there.
 */
export async function verifyResponse(
  response: Response,
  options: VerifyResponseOptions,
): Promise<VerificationResult> {
  return await verifyMessage(
    {
      ...messageFromResponse(response, options.request),
      body: await bodyBytes(response),
    },
    options,
  );
}

/** The verification block a response can carry (the seed's `sageVerification`). */
export interface VerificationBlock {
  verified: boolean;
  /** The verified key's owner; only when verified. */
  agentDid?: string;
  signatureValid: boolean;
  /** ISO 8601 time of the verification. */
  timestamp: string;
}

/**
 * The caller-safe summary of a verification: no reason, no key id.
 *
 * @example Usage
 * ```ts
 * import { VERIFICATION_FAILED_MESSAGE, verificationBlock } from "./http_signatures.ts";
 * verificationBlock({
 *   verified: false, signatureValid: false, message: VERIFICATION_FAILED_MESSAGE,
 *   reason: "unknown-key", detail: "no trusted key 'x'", timestamp: 0,
 * });
 * // { verified: false, signatureValid: false, timestamp: "1970-01-01T00:00:00.000Z" }
 * ```
 */
export function verificationBlock(
  result: VerificationResult,
): VerificationBlock {
  const block: VerificationBlock = {
    verified: result.verified,
    signatureValid: result.signatureValid,
    timestamp: new Date(result.timestamp).toISOString(),
  };
  if (result.verified && result.agentDid !== undefined) {
    block.agentDid = result.agentDid;
  }
  return block;
}

/** Options for {@linkcode kvNonceStore}. */
export interface KvNonceStoreOptions {
  /** @default {systemClock} */
  clock?: Clock;
  /**
   * Nonces recorded in one KV commit at most (each is one check; KV Connect
   * servers may allow only 10 per operation). @default {10}
   */
  maxBatch?: number;
  /** Batch commits in flight at once (one lets batches grow under load). @default {1} */
  maxInFlight?: number;
}

interface PendingNonce {
  key: Deno.KvKey;
  expireIn?: number;
  resolve(first: boolean): void;
  reject(err: unknown): void;
}

/**
 * A {@linkcode NonceStore} in Deno KV under `["sig-nonce", keyid, nonce]`:
 * an atomic insert-if-absent, so two nodes sharing the KV cannot both accept
 * one nonce. `expireIn` only garbage-collects; KV may keep the key longer,
 * which only makes replay detection stricter.
 *
 * Group commit: nonces that arrive while earlier commits are in flight are
 * recorded together, one commit for up to `maxBatch` of them, so a busy node
 * pays one KV write per batch rather than per request (a commit to a KV
 * file costs several times an Ed25519 verification). A batch whose commit
 * fails because one of its nonces was already there is retried one nonce at
 * a time, so exactly the replays are refused; the same nonce twice in one
 * batch is accepted once.
 *
 * @example Usage
 * ```ts
 * import { kvNonceStore } from "./http_signatures.ts";
 * const kv = await Deno.openKv(":memory:");
 * const seen = kvNonceStore(kv);
 * await seen("node-1", "n1", 300); // true
 * await seen("node-1", "n1", 300); // false
 * kv.close();
 * ```
 */
export function kvNonceStore(
  kv: Deno.Kv,
  options: KvNonceStoreOptions = {},
): NonceStore {
  const clock = options.clock ?? systemClock;
  const maxBatch = options.maxBatch ?? 10;
  const maxInFlight = options.maxInFlight ?? 1;
  const pending: PendingNonce[] = [];
  let inFlight = 0;

  const commit = (items: PendingNonce[]) =>
    retryLocked(() => {
      const op = kv.atomic();
      const seenAt = clock.now();
      for (const it of items) {
        op.check({ key: it.key, versionstamp: null }).set(
          it.key,
          { seenAt },
          it.expireIn ? { expireIn: it.expireIn } : undefined,
        );
      }
      return op.commit();
    });

  async function run(batch: PendingNonce[]): Promise<void> {
    // The same key twice in a batch: the first one decides, the rest are replays.
    const first = new Map<string, PendingNonce>();
    const repeats: PendingNonce[] = [];
    for (const it of batch) {
      const k = JSON.stringify(it.key);
      if (first.has(k)) repeats.push(it);
      else first.set(k, it);
    }
    const unique = [...first.values()];
    try {
      if ((await commit(unique)).ok) {
        for (const it of unique) it.resolve(true);
      } else {
        for (const it of unique) it.resolve((await commit([it])).ok);
      }
      for (const it of repeats) it.resolve(false);
    } catch (err) {
      for (const it of batch) it.reject(err);
    }
  }

  function pump(): void {
    while (inFlight < maxInFlight && pending.length > 0) {
      inFlight++;
      run(pending.splice(0, maxBatch)).finally(() => {
        inFlight--;
        pump();
      });
    }
  }

  return (keyid, nonce, ttlSec) =>
    new Promise<boolean>((resolve, reject) => {
      const expireIn = Number.isFinite(ttlSec)
        ? Math.max(1, Math.ceil(ttlSec * 1000))
        : undefined;
      pending.push({
        key: signatureNonceKey(keyid, nonce),
        expireIn,
        resolve,
        reject,
      });
      pump();
    });
}
