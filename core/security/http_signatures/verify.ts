/**
 * Verification: the policy Plexus applies to an RFC 9421 signature
 * (required components, maximum age from `created`, `expires`, nonce replay
 * protection through a {@linkcode NonceStore}, `keyid` resolved only to
 * trusted keys, `alg` agreeing with the key, and `Content-Digest` required
 * whenever there is a body).
 *
 * @module
 */
import { type Clock, systemClock } from "../../clock.ts";
import {
  type DigestAlgorithm,
  verifyContentDigest,
} from "../content_digest.ts";
import {
  type BareItem,
  type Dictionary,
  type InnerList,
  parseDictionary,
  serializeItem,
} from "../_structured_fields.ts";
import {
  checkKey,
  dummyVerify,
  type SignatureAlgorithm,
  type SignatureKey,
  verifyBase,
} from "./keys.ts";
import {
  bodyBytes,
  componentKey,
  createSignatureBase,
  DEFAULT_REQUEST_COMPONENTS,
  DEFAULT_RESPONSE_COMPONENTS,
  type FieldMap,
  fieldMap,
  messageFromRequest,
  messageFromResponse,
  parseComponent,
  type SignatureBaseOptions,
  type SignatureMessage,
} from "./signature_base.ts";

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

/** Public message of every verification failure; see the `reason` for logs. */
export const VERIFICATION_FAILED_MESSAGE =
  "HTTP message signature verification failed";

// Bounds on attacker-controlled sizes, checked before any work scales with them.
const MAX_SIGNATURE_HEADER_CHARS = 8192;
const MAX_SIGNATURES = 8;
const MAX_KEYID_CHARS = 256;
const MAX_NONCE_CHARS = 256;
const SIGNATURE_PARAMS: Record<string, BareItem["type"]> = {
  created: "integer",
  expires: "integer",
  nonce: "string",
  alg: "string",
  keyid: "string",
  tag: "string",
};

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
  /** Always `true`: the signature was accepted. */
  verified: true;
  /** Always `true`: the cryptographic check passed. */
  signatureValid: true;
  /** The label of the accepted signature in `Signature-Input`. */
  label: string;
  /** The signature's `keyid` parameter. */
  keyid: string;
  /** The algorithm it was checked with (the key's, never the message's). */
  alg: SignatureAlgorithm;
  /** The key owner (e.g. a `did:key`), when the key has one. */
  agentDid?: string;
  /** Seconds since the epoch. */
  created: number;
  /** The signature's `expires` parameter, seconds since the epoch. */
  expires?: number;
  /** The signature's `nonce` parameter. */
  nonce?: string;
  /** The signature's `tag` parameter. */
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
 * import { ManualClock } from "../../clock.ts";
 * import { signMessage, verifyMessage } from "./mod.ts";
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
 * import { signRequest, verifyRequest } from "./mod.ts";
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
 * import { VERIFICATION_FAILED_MESSAGE, verificationBlock } from "./mod.ts";
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
