/**
 * Channel names and per-message signatures shared by the gateway and the
 * agent SDK (`docs/protocol.md`, "Record types" and "Records").
 *
 * @module
 */
import { ed25519Verify } from "./handshake.ts";

/** Agent ids: letters, digits, `:`, `_`, `-` (a did:key fits), 1-128 characters, never a `.`. */
export const AGENT_ID_RE = /^[A-Za-z0-9:_-]{1,128}$/;
/** Channel names after the id: dot-separated words of letters, digits, `_`, `-`. */
export const CHANNEL_NAME_RE =
  /^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}$/;
/** What a per-message signature starts with. */
export const MESSAGE_CONTEXT = "plexus-gateway/v1 message\0";

/** Whether `id` can be an agent id. */
export function isAgentId(id: unknown): id is string {
  return typeof id === "string" && AGENT_ID_RE.test(id);
}

/** A parsed channel. */
export interface Channel {
  /** `agent`: agent → backend; `backend`: backend → agent. */
  side: "agent" | "backend";
  /** The agent's id (the `{id}` of `{side}.{id}.{name}`). */
  id: string;
  /** What follows `{side}.{id}.` (e.g. `heartbeat`, `policies.v2`). */
  name: string;
}

/**
 * Splits `agent.{id}.{name}` / `backend.{id}.{name}`; undefined when `ch` is
 * not one.
 *
 * @example Usage
 * ```ts
 * import { parseChannel } from "./channels.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(parseChannel("agent.a-1.heartbeat"), { side: "agent", id: "a-1", name: "heartbeat" });
 * assert.equal(parseChannel("agent.a-1"), undefined);
 * ```
 */
export function parseChannel(ch: unknown): Channel | undefined {
  if (typeof ch !== "string" || ch.length > 700) return undefined;
  const first = ch.indexOf(".");
  const second = ch.indexOf(".", first + 1);
  if (first < 0 || second < 0) return undefined;
  const side = ch.slice(0, first);
  const id = ch.slice(first + 1, second);
  const name = ch.slice(second + 1);
  if (side !== "agent" && side !== "backend") return undefined;
  if (!isAgentId(id) || !CHANNEL_NAME_RE.test(name)) return undefined;
  return { side, id, name };
}

/** `agent.{id}.{name}`. Throws RangeError on a bad id or name. */
export function agentChannel(id: string, name: string): string {
  return channelOf("agent", id, name);
}

/** `backend.{id}.{name}`. Throws RangeError on a bad id or name. */
export function backendChannel(id: string, name: string): string {
  return channelOf("backend", id, name);
}

function channelOf(side: string, id: string, name: string): string {
  if (!isAgentId(id)) {
    throw new RangeError(`bad agent id '${String(id).slice(0, 80)}'`);
  }
  if (!CHANNEL_NAME_RE.test(name)) {
    throw new RangeError(`bad channel name '${String(name).slice(0, 80)}'`);
  }
  return `${side}.${id}.${name}`;
}

/** The bytes a per-message signature covers: MESSAGE_CONTEXT ‖ lp(header bytes) ‖ content. */
export function messageSignedBytes(
  headerBytes: Uint8Array,
  content: Uint8Array,
): Uint8Array<ArrayBuffer> {
  const c = new TextEncoder().encode(MESSAGE_CONTEXT);
  if (headerBytes.length > 0xffff) {
    throw new RangeError("header over 65535 bytes");
  }
  const out = new Uint8Array(
    c.length + 2 + headerBytes.length + content.length,
  );
  out.set(c);
  new DataView(out.buffer).setUint16(c.length, headerBytes.length);
  out.set(headerBytes, c.length + 2);
  out.set(content, c.length + 2 + headerBytes.length);
  return out;
}

/** Signs a record's content for audit (the sender's Ed25519 key). */
export async function signMessage(
  key: CryptoKey,
  headerBytes: Uint8Array,
  content: Uint8Array,
): Promise<Uint8Array> {
  return new Uint8Array(
    await crypto.subtle.sign(
      "Ed25519",
      key,
      messageSignedBytes(headerBytes, content),
    ),
  );
}

/** Checks a per-message signature by the sender's raw public key. */
export async function verifyMessageSignature(
  publicRaw: Uint8Array,
  signature: Uint8Array,
  headerBytes: Uint8Array,
  content: Uint8Array,
): Promise<boolean> {
  return await ed25519Verify(
    publicRaw,
    signature,
    messageSignedBytes(headerBytes, content),
  )
    .catch(() => false);
}
