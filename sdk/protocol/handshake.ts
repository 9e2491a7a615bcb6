/**
 * The agent gateway handshake (`docs/protocol.md`, "Handshake"): fresh X25519
 * ephemerals on both sides; each side signs the transcript hash, which covers
 * both ephemerals, both nonces, both identities and the offered and chosen
 * versions and suites, with a role-specific context string; HKDF-SHA256 over
 * the transcript gives one ChaCha20-Poly1305 key per direction and the
 * session id.
 *
 * ```
 * agent → node   text  {"t":"hello","versions":[1],"suites":[SUITE],"agent":ID,"e":eA,"n":nA,"resume"?:true}
 * node  → agent  text  {"t":"welcome","version":1,"suite":SUITE,"node":NODE,"key":kN,"e":eN,"n":nN,"sig":sigN}
 * agent → node   record type "auth"   {"sig": sigA}   or, resuming, {"resume": TOKEN}
 * node  → agent  record type "ready"  {"sid","node","resume","resumeExpiresAt","heartbeatMs"}
 * ```
 *
 * This module only computes; sockets, KV and timers live in the gateway and
 * the SDK. Randomness and ephemeral keys can be injected, which is how the
 * byte-exact vectors in `docs/protocol.md` are produced.
 *
 * @module
 */
import { createHash, hkdfSync } from "node:crypto";

/** Protocol versions this build speaks, best first. */
export const VERSIONS: readonly number[] = [1];
/** The one cipher suite: X25519 key agreement, Ed25519 identities, ChaCha20-Poly1305, SHA-256/HKDF. */
export const SUITE = "X25519_ED25519_CHACHAPOLY_SHA256";
/** Suites this build speaks, best first. */
export const SUITES: readonly string[] = [SUITE];
/** First bytes of the transcript. */
export const PROLOGUE = "plexus-gateway/v1";
/** Prefix of what the node signs. */
export const NODE_CONTEXT = "plexus-gateway/v1 node signature\0";
/** Prefix of what the agent signs. */
export const AGENT_CONTEXT = "plexus-gateway/v1 agent signature\0";
/** HKDF info of the session keys. */
export const KEYS_INFO = "plexus-gateway/v1 keys";

const encoder = new TextEncoder();
const B64URL_RE = /^[A-Za-z0-9_-]*$/;
const MAX_ID_CHARS = 256;

/** A refused handshake message. The gateway closes with 4400 (malformed, unsupported) or 4401 (the rest). */
export class HandshakeError extends Error {
  /** Always `"HandshakeError"`. */
  override name = "HandshakeError";
  /**
   * Creates the error; `reason` says why the message was refused (and so
   * which close code the gateway sends).
   *
   * @param reason Why the message was refused.
   * @param message What was wrong, for logs.
   */
  constructor(
    readonly reason:
      | "malformed"
      | "unsupported"
      | "bad-signature"
      | "untrusted-node"
      | "bad-key",
    message: string,
  ) {
    super(message);
  }
}

/** The agent's first message. */
export interface Hello {
  /** The message type: `"hello"`. */
  t: "hello";
  /** Protocol versions the agent speaks (1-16 integers 1-255), preferred first. */
  versions: number[];
  /** Cipher suites the agent supports (1-16 names), preferred first. */
  suites: string[];
  /** The agent id as enrolled (often its did:key). */
  agent: string;
  /** The agent's ephemeral X25519 public key, base64url (32 bytes). */
  e: string;
  /** 32 fresh random bytes, base64url. */
  n: string;
  /** The agent will prove itself with a resumption token, not a signature. */
  resume?: boolean;
}

/** The node's answer. */
export interface Welcome {
  /** The message type: `"welcome"`. */
  t: "welcome";
  /** The protocol version the node picked from the agent's `versions`. */
  version: number;
  /** The cipher suite the node picked from the agent's `suites`. */
  suite: string;
  /** The node's id. */
  node: string;
  /** The node's Ed25519 public key, base64url (32 bytes). */
  key: string;
  /** The node's ephemeral X25519 public key, base64url. */
  e: string;
  /** 32 fresh random bytes, base64url. */
  n: string;
  /** Ed25519 signature of NODE_CONTEXT ‖ th1, base64url (64 bytes). */
  sig: string;
}

/** What both sides hold after the handshake. */
export interface SessionKeys {
  /** Agent → node key. */
  c2s: Uint8Array;
  /** Node → agent key. */
  s2c: Uint8Array;
  /** Session id: base64url of 16 bytes derived with the keys. */
  sid: string;
  /** The transcript hash the agent signs (th2). */
  th2: Uint8Array;
}

/** base64url without padding. */
export function b64u(bytes: Uint8Array): string {
  return bytes.toBase64({ alphabet: "base64url", omitPadding: true });
}

/** Decodes base64url of exactly `length` bytes, or throws HandshakeError. */
export function fromB64u(
  text: unknown,
  length: number,
  what: string,
): Uint8Array {
  let bytes: Uint8Array | undefined;
  if (typeof text === "string" && B64URL_RE.test(text)) {
    try {
      bytes = Uint8Array.fromBase64(text, { alphabet: "base64url" });
    } catch { /* refused below */ }
  }
  // Canonical only: one spelling per value (no padding, no stray low bits).
  if (bytes?.length !== length || b64u(bytes) !== text) {
    throw new HandshakeError(
      "malformed",
      `${what} must be base64url of ${length} bytes`,
    );
  }
  return bytes;
}

function sha256(...parts: Uint8Array[]): Uint8Array {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}

function lp(bytes: Uint8Array): Uint8Array {
  if (bytes.length > 0xffff) throw new RangeError("field over 65535 bytes");
  const out = new Uint8Array(2 + bytes.length);
  new DataView(out.buffer).setUint16(0, bytes.length);
  out.set(bytes, 2);
  return out;
}

/**
 * The transcript T1 (see docs/protocol.md): the prologue, then each field
 * length-prefixed (u16 big-endian) in a fixed order. Signatures never cover
 * re-serialized JSON, only these bytes.
 */
export function transcript(
  hello: Hello,
  welcome: Omit<Welcome, "sig">,
): Uint8Array {
  const parts = [
    encoder.encode(PROLOGUE),
    lp(Uint8Array.from(hello.versions)),
    lp(encoder.encode(hello.suites.join(","))),
    lp(encoder.encode(hello.agent)),
    lp(fromB64u(hello.e, 32, "hello.e")),
    lp(fromB64u(hello.n, 32, "hello.n")),
    lp(Uint8Array.of(hello.resume ? 1 : 0)),
    lp(Uint8Array.of(welcome.version)),
    lp(encoder.encode(welcome.suite)),
    lp(encoder.encode(welcome.node)),
    lp(fromB64u(welcome.key, 32, "welcome.key")),
    lp(fromB64u(welcome.e, 32, "welcome.e")),
    lp(fromB64u(welcome.n, 32, "welcome.n")),
  ];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** th1 = SHA-256(T1): what the node signs (after NODE_CONTEXT). */
export function th1Of(hello: Hello, welcome: Omit<Welcome, "sig">): Uint8Array {
  return sha256(transcript(hello, welcome));
}

/** th2 = SHA-256(th1 ‖ node signature): what the agent signs, and the HKDF salt. */
export function th2Of(th1: Uint8Array, nodeSig: Uint8Array): Uint8Array {
  return sha256(th1, nodeSig);
}

/** NODE_CONTEXT ‖ th1 or AGENT_CONTEXT ‖ th2. */
export function signedBytes(context: string, hash: Uint8Array): Uint8Array {
  const c = encoder.encode(context);
  const out = new Uint8Array(c.length + hash.length);
  out.set(c);
  out.set(hash, c.length);
  return out;
}

/**
 * Keys from the X25519 shared secret: HKDF-SHA256(ikm = shared, salt = th2,
 * info = KEYS_INFO, 80 bytes) = c2s (32) ‖ s2c (32) ‖ session id (16).
 */
export function deriveKeys(shared: Uint8Array, th2: Uint8Array): SessionKeys {
  if (shared.length !== 32 || shared.every((b) => b === 0)) {
    throw new HandshakeError("bad-key", "X25519 shared secret is all zero");
  }
  const okm = new Uint8Array(hkdfSync("sha256", shared, th2, KEYS_INFO, 80));
  return {
    c2s: okm.slice(0, 32),
    s2c: okm.slice(32, 64),
    sid: b64u(okm.subarray(64, 80)),
    th2,
  };
}

// ------------------------------------------------------------------ keys

/** An X25519 key pair with its raw public key. */
export interface Ephemeral {
  privateKey: CryptoKey;
  publicRaw: Uint8Array;
}

// PKCS #8 DER before the 32 private bytes (RFC 8410): X25519, then Ed25519.
const X25519_PKCS8_PREFIX = Uint8Array.fromHex(
  "302e020100300506032b656e04220420",
);
const ED25519_PKCS8_PREFIX = Uint8Array.fromHex(
  "302e020100300506032b657004220420",
);

/** Imports 32 private bytes (PKCS #8) and returns the key with its raw public half. */
async function fromPrivateBytes(
  name: "X25519" | "Ed25519",
  seed: Uint8Array,
  usages: KeyUsage[],
): Promise<{ privateKey: CryptoKey; publicRaw: Uint8Array }> {
  if (seed.length !== 32) throw new RangeError("private key must be 32 bytes");
  const der = new Uint8Array(48);
  der.set(name === "X25519" ? X25519_PKCS8_PREFIX : ED25519_PKCS8_PREFIX);
  der.set(seed, 16);
  const privateKey = await crypto.subtle.importKey(
    "pkcs8",
    der,
    { name },
    true,
    usages,
  );
  const jwk = await crypto.subtle.exportKey("jwk", privateKey);
  return {
    privateKey,
    publicRaw: Uint8Array.fromBase64(jwk.x!, { alphabet: "base64url" }),
  };
}

/** A fresh X25519 ephemeral. */
export async function generateEphemeral(): Promise<Ephemeral> {
  const pair = await crypto.subtle.generateKey({ name: "X25519" }, true, [
    "deriveBits",
  ]) as CryptoKeyPair;
  return {
    privateKey: pair.privateKey,
    publicRaw: new Uint8Array(
      await crypto.subtle.exportKey("raw", pair.publicKey),
    ),
  };
}

/** An X25519 key from its 32 private bytes (for test vectors). */
export function ephemeralFromPrivate(seed: Uint8Array): Promise<Ephemeral> {
  return fromPrivateBytes("X25519", seed, ["deriveBits"]);
}

/** An Ed25519 signing key from its 32-byte seed, with the raw public key. */
export function ed25519FromSeed(
  seed: Uint8Array,
): Promise<{ privateKey: CryptoKey; publicRaw: Uint8Array }> {
  return fromPrivateBytes("Ed25519", seed, ["sign"]);
}

async function x25519(
  priv: CryptoKey,
  peerRaw: Uint8Array,
): Promise<Uint8Array> {
  let peer: CryptoKey;
  try {
    peer = await crypto.subtle.importKey(
      "raw",
      peerRaw.slice(),
      { name: "X25519" },
      false,
      [],
    );
    return new Uint8Array(
      await crypto.subtle.deriveBits(
        { name: "X25519", public: peer },
        priv,
        256,
      ),
    );
  } catch (err) {
    throw new HandshakeError(
      "bad-key",
      `X25519 failed: ${(err as Error).message}`,
    );
  }
}

async function ed25519Sign(
  key: CryptoKey,
  data: Uint8Array,
): Promise<Uint8Array> {
  return new Uint8Array(
    await crypto.subtle.sign("Ed25519", key, data.slice()),
  );
}

/** Verifies an Ed25519 signature by a raw public key (the caller vets the key). */
export async function ed25519Verify(
  publicRaw: Uint8Array,
  signature: Uint8Array,
  data: Uint8Array,
): Promise<boolean> {
  const key = await crypto.subtle.importKey(
    "raw",
    publicRaw.slice(),
    { name: "Ed25519" },
    false,
    ["verify"],
  );
  return await crypto.subtle.verify(
    "Ed25519",
    key,
    signature.slice(),
    data.slice(),
  );
}

// ------------------------------------------------------------- messages

function parseJsonObject(text: unknown, what: string): Record<string, unknown> {
  if (typeof text !== "string" || text.length > 4096) {
    throw new HandshakeError(
      "malformed",
      `${what} must be a JSON text frame of at most 4096 bytes`,
    );
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new HandshakeError("malformed", `${what} is not JSON`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new HandshakeError("malformed", `${what} is not a JSON object`);
  }
  return v as Record<string, unknown>;
}

// deno-lint-ignore no-control-regex
const BAD_ID_CHARS = /[\u0000-\u001f\u007f,]/;

function idOk(v: unknown): v is string {
  return typeof v === "string" && v.length > 0 && v.length <= MAX_ID_CHARS &&
    !BAD_ID_CHARS.test(v);
}

/** Parses and checks a hello (field types and sizes only). */
export function parseHello(text: unknown): Hello {
  const o = parseJsonObject(text, "hello");
  if (o.t !== "hello") {
    throw new HandshakeError(
      "malformed",
      `expected a hello, got t=${JSON.stringify(o.t)?.slice(0, 40)}`,
    );
  }
  const { versions, suites, agent, e, n, resume } = o;
  if (
    !Array.isArray(versions) || versions.length < 1 || versions.length > 16 ||
    !versions.every((x) => Number.isInteger(x) && x >= 1 && x <= 255)
  ) {
    throw new HandshakeError(
      "malformed",
      "hello.versions must be 1-16 integers 1-255",
    );
  }
  if (
    !Array.isArray(suites) || suites.length < 1 || suites.length > 16 ||
    !suites.every(idOk)
  ) throw new HandshakeError("malformed", "hello.suites must be 1-16 names");
  if (!idOk(agent)) {
    throw new HandshakeError(
      "malformed",
      "hello.agent must be 1-256 printable characters without commas",
    );
  }
  fromB64u(e, 32, "hello.e");
  fromB64u(n, 32, "hello.n");
  if (resume !== undefined && typeof resume !== "boolean") {
    throw new HandshakeError("malformed", "hello.resume must be a boolean");
  }
  return {
    t: "hello",
    versions,
    suites,
    agent,
    e: e as string,
    n: n as string,
    ...(resume ? { resume: true } : {}),
  };
}

/** Parses and checks a welcome (field types and sizes only). */
export function parseWelcome(text: unknown): Welcome {
  const o = parseJsonObject(text, "welcome");
  if (o.t !== "welcome") {
    throw new HandshakeError("malformed", "expected a welcome");
  }
  const { version, suite, node, key, e, n, sig } = o;
  if (
    !Number.isInteger(version) || (version as number) < 1 ||
    (version as number) > 255
  ) {
    throw new HandshakeError(
      "malformed",
      "welcome.version must be an integer 1-255",
    );
  }
  if (!idOk(suite) || !idOk(node)) {
    throw new HandshakeError("malformed", "welcome.suite/node malformed");
  }
  fromB64u(key, 32, "welcome.key");
  fromB64u(e, 32, "welcome.e");
  fromB64u(n, 32, "welcome.n");
  fromB64u(sig, 64, "welcome.sig");
  return {
    t: "welcome",
    version: version as number,
    suite,
    node,
    key: key as string,
    e: e as string,
    n: n as string,
    sig: sig as string,
  };
}

// ---------------------------------------------------------------- roles

/** Injectable randomness and keys (tests and vectors). */
export interface HandshakeRandom {
  ephemeral?: Ephemeral;
  /** 32 bytes. */
  nonce?: Uint8Array;
}

/** Agent side, step 1: the hello to send and the state to keep. */
export async function agentHello(
  agent: string,
  options:
    & { resume?: boolean; versions?: number[]; suites?: string[] }
    & HandshakeRandom = {},
): Promise<{ hello: Hello; text: string; ephemeral: Ephemeral }> {
  const ephemeral = options.ephemeral ?? await generateEphemeral();
  const nonce = options.nonce ?? crypto.getRandomValues(new Uint8Array(32));
  const hello: Hello = {
    t: "hello",
    versions: options.versions ?? [...VERSIONS],
    suites: options.suites ?? [...SUITES],
    agent,
    e: b64u(ephemeral.publicRaw),
    n: b64u(nonce),
    ...(options.resume ? { resume: true } : {}),
  };
  parseHello(JSON.stringify(hello)); // the same checks the node applies
  return { hello, text: JSON.stringify(hello), ephemeral };
}

/** The node's identity for the handshake. */
export interface NodeIdentityKey {
  nodeId: string;
  privateKey: CryptoKey;
  /** Raw 32-byte Ed25519 public key. */
  publicRaw: Uint8Array;
}

/**
 * Node side: answers a hello. Picks the best common version and suite
 * (HandshakeError "unsupported" when there is none), signs th1 and derives
 * the session keys. The agent is not yet authenticated: check its `auth`
 * record with {@linkcode verifyAgentSignature}.
 */
export async function nodeWelcome(
  helloText: unknown,
  node: NodeIdentityKey,
  random: HandshakeRandom = {},
): Promise<
  { hello: Hello; welcome: Welcome; text: string; keys: SessionKeys }
> {
  const hello = parseHello(helloText);
  const version = VERSIONS.find((v) => hello.versions.includes(v));
  const suite = SUITES.find((s) => hello.suites.includes(s));
  if (version === undefined || suite === undefined) {
    throw new HandshakeError(
      "unsupported",
      `no common version/suite (node speaks versions ${
        VERSIONS.join(",")
      }, suites ${SUITES.join(",")})`,
    );
  }
  const ephemeral = random.ephemeral ?? await generateEphemeral();
  const nonce = random.nonce ?? crypto.getRandomValues(new Uint8Array(32));
  const unsigned: Omit<Welcome, "sig"> = {
    t: "welcome",
    version,
    suite,
    node: node.nodeId,
    key: b64u(node.publicRaw),
    e: b64u(ephemeral.publicRaw),
    n: b64u(nonce),
  };
  const th1 = th1Of(hello, unsigned);
  const sig = await ed25519Sign(
    node.privateKey,
    signedBytes(NODE_CONTEXT, th1),
  );
  const shared = await x25519(
    ephemeral.privateKey,
    fromB64u(hello.e, 32, "hello.e"),
  );
  const keys = deriveKeys(shared, th2Of(th1, sig));
  const welcome: Welcome = { ...unsigned, sig: b64u(sig) };
  return { hello, welcome, text: JSON.stringify(welcome), keys };
}

/**
 * Agent side, step 2: checks the welcome (the node's signature over th1,
 * the version and suite it chose among those offered, and, when
 * `trustedNodeKeys` is given, that the node key is one of them), derives
 * the keys and signs th2 (unless resuming).
 */
export async function agentFinish(
  state: { hello: Hello; ephemeral: Ephemeral },
  welcomeText: unknown,
  options: {
    /** The agent's Ed25519 private key (not needed when resuming). */
    signingKey?: CryptoKey;
    /** base64url raw node keys the agent accepts; undefined accepts any (first use). */
    trustedNodeKeys?: ReadonlySet<string>;
  },
): Promise<{ welcome: Welcome; keys: SessionKeys; signature?: Uint8Array }> {
  const welcome = parseWelcome(welcomeText);
  if (
    !state.hello.versions.includes(welcome.version) ||
    !state.hello.suites.includes(welcome.suite)
  ) {
    throw new HandshakeError(
      "unsupported",
      `node chose version ${welcome.version} / ${welcome.suite}, which was not offered`,
    );
  }
  if (options.trustedNodeKeys && !options.trustedNodeKeys.has(welcome.key)) {
    throw new HandshakeError(
      "untrusted-node",
      `node key ${welcome.key} is not trusted`,
    );
  }
  const { sig: sigText, ...unsigned } = welcome;
  const sig = fromB64u(sigText, 64, "welcome.sig");
  const th1 = th1Of(state.hello, unsigned);
  const ok = await ed25519Verify(
    fromB64u(welcome.key, 32, "welcome.key"),
    sig,
    signedBytes(NODE_CONTEXT, th1),
  ).catch(() => false);
  if (!ok) {
    throw new HandshakeError("bad-signature", "node signature does not verify");
  }
  const shared = await x25519(
    state.ephemeral.privateKey,
    fromB64u(welcome.e, 32, "welcome.e"),
  );
  const keys = deriveKeys(shared, th2Of(th1, sig));
  const signature = options.signingKey
    ? await ed25519Sign(
      options.signingKey,
      signedBytes(AGENT_CONTEXT, keys.th2),
    )
    : undefined;
  return { welcome, keys, signature };
}

/** Node side: does `signature` prove the agent key over th2? */
export async function verifyAgentSignature(
  agentPublicRaw: Uint8Array,
  th2: Uint8Array,
  signature: unknown,
): Promise<boolean> {
  let sig: Uint8Array;
  try {
    sig = fromB64u(signature, 64, "auth.sig");
  } catch {
    return false;
  }
  return await ed25519Verify(
    agentPublicRaw,
    sig,
    signedBytes(AGENT_CONTEXT, th2),
  ).catch(() => false);
}
