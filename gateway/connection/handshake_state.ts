/**
 * The gateway side of the handshake (`docs/protocol.md`), as the steps an
 * agent connection drives: which frames each state accepts
 * ({@linkcode routeFrame}), the checks of the `auth` record
 * ({@linkcode openAuth}) and authentication by signature or resumption
 * token ({@linkcode authenticate}). The connection holds the state and makes
 * the transitions; nothing here sends or closes.
 *
 * States: `hello` (waiting for the text hello) → `welcoming` (signing the
 * welcome) → `auth` (waiting for the auth record) → `authenticating`
 * (checking it) → `ready` → `closed`. Any frame in `welcoming` or
 * `authenticating`, a text frame in `auth`, or a record before `ready` is a
 * protocol violation (4400). Frames over the size limit are closed with 1009
 * before anything is parsed or decrypted.
 *
 * Every authentication failure is closed with 4401 and the same
 * {@linkcode AUTH_FAILED} text (no oracle); the precise reason is only
 * counted and logged.
 *
 * @module
 */
import type { SessionStore } from "../../core/state/sessions.ts";
import {
  type Hello,
  type SessionKeys,
  verifyAgentSignature,
} from "../../sdk/protocol/handshake.ts";
import { RecordError, type RecordOpener } from "../../sdk/protocol/record.ts";
import { agentKeyBytes, type AgentRecord, getAgent } from "../enrolment.ts";
import type { GatewayConfig } from "./types.ts";

/** Where a connection is in its life (see the module doc). */
export type HandshakeState =
  | "hello"
  | "welcoming"
  | "auth"
  | "authenticating"
  | "ready"
  | "closed";

/** The reason text of every authentication failure (no oracle). */
export const AUTH_FAILED = "authentication failed";

/**
 * What to do with one incoming frame: drop it, close (with the metric's
 * `detail` while handshaking), or take it as the hello, the auth record or
 * a record of a ready connection (`bytes`: its size, for the metrics).
 */
export type FrameAction =
  | { do: "ignore" }
  | { do: "close"; code: number; reason: string; detail?: string }
  | { do: "hello"; text: string }
  | { do: "auth"; frame: Uint8Array }
  | { do: "record"; frame: Uint8Array; bytes: number };

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * What a connection in `state` does with frame `data` (text or binary), given
 * the largest frame it accepts.
 *
 * @example Usage
 * ```ts
 * import { routeFrame } from "./handshake_state.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(routeFrame("hello", '{"t":"hello"}', 1024), { do: "hello", text: '{"t":"hello"}' });
 * assert.deepEqual(routeFrame("hello", new ArrayBuffer(4), 1024), {
 *   do: "close", code: 1003, reason: "the hello must be a text frame", detail: "binary",
 * });
 * assert.equal(routeFrame("auth", "x".repeat(2000), 1024).do, "close"); // 1009
 * assert.equal(routeFrame("closed", "anything", 1024).do, "ignore");
 * ```
 */
export function routeFrame(
  state: HandshakeState,
  data: string | ArrayBuffer,
  maxFrame: number,
): FrameAction {
  if (state === "closed") return { do: "ignore" };
  const text = typeof data === "string" ? data : undefined;
  let size: number;
  if (text === undefined) size = (data as ArrayBuffer).byteLength;
  else {
    size = text.length * 3 <= maxFrame
      ? text.length
      : encoder.encode(text).length;
  }
  if (size > maxFrame) {
    return {
      do: "close",
      code: 1009,
      reason: `frame over the size limit (${maxFrame} bytes)`,
      detail: "oversize",
    };
  }
  switch (state) {
    case "hello":
      if (text === undefined) {
        return {
          do: "close",
          code: 1003,
          reason: "the hello must be a text frame",
          detail: "binary",
        };
      }
      return { do: "hello", text };
    case "welcoming":
    case "authenticating":
      return {
        do: "close",
        code: 4400,
        reason: text === undefined ? "record before ready" : "second hello",
        detail: text === undefined ? "premature_record" : "second_hello",
      };
    case "auth":
      if (text !== undefined) {
        return {
          do: "close",
          code: 4400,
          reason: "second hello",
          detail: "second_hello",
        };
      }
      return { do: "auth", frame: new Uint8Array(data as ArrayBuffer) };
    case "ready":
      if (text !== undefined) {
        return looksLikeHello(text)
          ? { do: "close", code: 4400, reason: "second hello" }
          : {
            do: "close",
            code: 1003,
            reason: "text frame after the handshake",
          };
      }
      return {
        do: "record",
        frame: new Uint8Array(data as ArrayBuffer),
        bytes: size,
      };
  }
}

/**
 * The outcome of {@linkcode openAuth}: the auth body, a record of another
 * type (4400), or a refusal (4401) with its reason for the metrics.
 */
export type AuthRecordCheck =
  | { ok: true; body: Record<string, unknown> }
  | { ok: false; premature: true }
  | { ok: false; premature?: false; refused: string };

/**
 * Opens the first record after the welcome and checks it is the agent's
 * `auth`: this session, from the agent of the hello, to `backend`, no
 * channel, unsigned, a JSON object body. Errors other than
 * `RecordError` are thrown.
 *
 * @example Usage
 * ```ts
 * import { openAuth } from "./handshake_state.ts";
 * import { RecordOpener, RecordSealer } from "../../sdk/protocol/record.ts";
 * import type { Hello, SessionKeys } from "../../sdk/protocol/handshake.ts";
 * import assert from "node:assert/strict";
 * const key = new Uint8Array(32);
 * const keys: SessionKeys = { c2s: key, s2c: key, sid: "s1", th2: new Uint8Array(32) };
 * const hello: Hello = { t: "hello", versions: [1], suites: [], agent: "a1", e: "", n: "" };
 * const frame = new RecordSealer(key).seal(
 *   { sid: "s1", from: "a1", to: "backend", ch: "", type: "auth", id: "1" },
 *   new TextEncoder().encode('{"sig":"x"}'),
 * );
 * assert.deepEqual(openAuth(new RecordOpener(key), frame, hello, keys), { ok: true, body: { sig: "x" } });
 * ```
 */
export function openAuth(
  opener: RecordOpener,
  frame: Uint8Array,
  hello: Hello,
  keys: SessionKeys,
): AuthRecordCheck {
  let body: Record<string, unknown> | undefined;
  let refused: string | undefined;
  try {
    const rec = opener.open(frame);
    const h = rec.header;
    if (h.type !== "auth") {
      // An authentic record, but not the auth the handshake needs first.
      return { ok: false, premature: true };
    }
    if (
      h.sid !== keys.sid || h.from !== hello.agent || h.to !== "backend" ||
      h.ch !== "" || rec.signature
    ) refused = "bad_auth_header";
    else body = parseObject(rec.body);
    if (!refused && !body) refused = "bad_auth_body";
  } catch (err) {
    if (!(err instanceof RecordError)) throw err;
    refused = `auth_record_${err.reason}`;
  }
  if (refused) return { ok: false, refused };
  return { ok: true, body: body! };
}

/** What {@linkcode authenticate} reads. */
export interface AuthenticateDeps {
  /** Where enrolled agents are. */
  kv: Deno.Kv;
  /** Resumption tokens (single use). */
  sessions: SessionStore;
  /** `maxSessionAgeMs`: a signature starts a session this long. */
  config: Pick<GatewayConfig, "maxSessionAgeMs">;
}

/**
 * The outcome of {@linkcode authenticate}: the enrolled agent with the time
 * of its last key proof and the end of its session, or the refusal reason.
 */
export type Authenticated =
  | {
    ok: true;
    agent: AgentRecord;
    /** Wall-clock ms of the last key proof (kept across resumptions). */
    authAt: number;
    /** Wall-clock ms the session ends (`maxSessionAgeMs` after `authAt`). */
    sessionExpires: number;
  }
  | { ok: false; reason: string };

/**
 * Authenticates the agent of `hello` by the auth `body`: its signature of
 * the transcript (`sig`), or with a resuming hello its resumption token
 * (`resume`, single use, revoked here; the session keeps its end).
 * Unknown agents cost a signature verification too, so timing tells
 * nothing.
 *
 * @example Usage
 * ```ts
 * import { authenticate } from "./handshake_state.ts";
 * import { createSessionStore } from "../../core/state/sessions.ts";
 * import type { Hello, SessionKeys } from "../../sdk/protocol/handshake.ts";
 * import assert from "node:assert/strict";
 * const kv = await Deno.openKv(":memory:");
 * const hello: Hello = { t: "hello", versions: [1], suites: [], agent: "nobody", e: "", n: "" };
 * const keys: SessionKeys = { c2s: new Uint8Array(32), s2c: new Uint8Array(32), sid: "s1", th2: new Uint8Array(32) };
 * const out = await authenticate(
 *   { kv, sessions: createSessionStore(kv), config: { maxSessionAgeMs: 60_000 } },
 *   hello, keys, { sig: "AAAA" },
 * );
 * assert.deepEqual(out, { ok: false, reason: "unknown_agent" });
 * kv.close();
 * ```
 */
export async function authenticate(
  deps: AuthenticateDeps,
  hello: Hello,
  keys: SessionKeys,
  body: Record<string, unknown>,
): Promise<Authenticated> {
  const agent = await getAgent(deps.kv, hello.agent);
  const now = Date.now();
  let authAt = now;
  let sessionExpires = now + deps.config.maxSessionAgeMs;
  let reason: string | undefined;
  if (!hello.resume) {
    // Unknown agents cost a verification too, so timing tells nothing.
    const ok = await verifyAgentSignature(
      agent ? agentKeyBytes(agent) : DUMMY_KEY,
      keys.th2,
      body.sig,
    );
    if (!agent) reason = "unknown_agent";
    else if (!ok) reason = "bad_signature";
  } else {
    const token = body.resume;
    const s = typeof token === "string" ? await deps.sessions.get(token) : null;
    const data = s?.data as
      | { authAt?: number; sessionExpires?: number; key?: string }
      | undefined;
    if (!agent) reason = "unknown_agent";
    else if (
      !s || s.kind !== "agent" || s.subject !== `agent:${hello.agent}` ||
      data?.key !== agent.publicKey || typeof data.authAt !== "number" ||
      typeof data.sessionExpires !== "number" || data.sessionExpires <= now
    ) reason = "bad_token";
    // Single use: of two racing resumptions only one revokes the token.
    else if (!await deps.sessions.revoke(token as string)) {
      reason = "bad_token";
    } else {
      authAt = data.authAt!;
      sessionExpires = data.sessionExpires!;
    }
  }
  if (reason || !agent) return { ok: false, reason: reason! };
  return { ok: true, agent, authAt, sessionExpires };
}

/** A valid Ed25519 public key (the base point) used to verify for unknown agents. */
const DUMMY_KEY = Uint8Array.fromHex(
  "5866666666666666666666666666666666666666666666666666666666666666",
);

function parseObject(body: Uint8Array): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(decoder.decode(body));
    return typeof v === "object" && v !== null && !Array.isArray(v)
      ? v
      : undefined;
  } catch {
    return undefined;
  }
}

function looksLikeHello(text: string): boolean {
  if (text.length > 4096) return false;
  try {
    return (JSON.parse(text) as { t?: unknown })?.t === "hello";
  } catch {
    return false;
  }
}
