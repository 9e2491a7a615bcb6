/**
 * Enrolled agents: id, Ed25519 public key and roles, kept in KV
 * (`["gateway", "agents", id]`). Only enrolled agents pass the gateway
 * handshake.
 *
 * Keys are checked by `parseEd25519PublicKey`: malformed, wrong-length,
 * non-canonical and small-order keys are refused (a small-order key makes a
 * crafted signature verify for any message). A `did:key` agent id must be
 * the did:key of the key enrolled with it.
 *
 * @module
 */
import { z } from "zod";
import {
  ed25519DidKey,
  KeyFormatError,
  parseEd25519PublicKey,
} from "../core/security/ed25519.ts";
import { gatewayAgentKey } from "../core/state/keys.ts";
import { b64u } from "../sdk/protocol/handshake.ts";
import { AGENT_ID_RE, isAgentId } from "../sdk/protocol/channels.ts";
import { roleSchema } from "./policy.ts";

/** An enrolled agent as stored. */
export interface AgentRecord {
  agentId: string;
  /** Raw Ed25519 public key, base64url (32 bytes). */
  publicKey: string;
  roles: string[];
  /** Wall-clock ms. */
  enrolledAt: number;
  /** The principal that enrolled it. */
  enrolledBy: string;
}

/** Zod schema of an enrolment request (`POST /api/v1/agents`). */
export const agentEnrolmentSchema = z.strictObject({
  agentId: z.string().regex(
    AGENT_ID_RE,
    "agentId must be 1-128 letters, digits, ':', '_' or '-' (a did:key fits)",
  ),
  /** Raw base64url/base64/hex, a did:key or an Ed25519 JWK. */
  publicKey: z.union([
    z.string().min(1).max(200),
    z.record(z.string(), z.unknown()),
  ]),
  roles: z.array(roleSchema).min(1).max(16),
  /** Re-enrol an existing id (new key or roles); otherwise 409. */
  replace: z.boolean().optional(),
});

/** An enrolment request. */
export type AgentEnrolment = z.output<typeof agentEnrolmentSchema>;

/** A refused enrolment, with the HTTP status it maps to. */
export class EnrolmentError extends Error {
  override name = "EnrolmentError";
  constructor(readonly status: 400 | 404 | 409, message: string) {
    super(message);
  }
}

/** The raw key bytes of a record. */
export function agentKeyBytes(record: AgentRecord): Uint8Array {
  return Uint8Array.fromBase64(record.publicKey, { alphabet: "base64url" });
}

/**
 * Checks and stores an enrolment; throws {@linkcode EnrolmentError}.
 *
 * @example Usage
 * ```ts
 * import { enrolAgent, getAgent } from "./enrolment.ts";
 * import assert from "node:assert/strict";
 * const kv = await Deno.openKv(":memory:");
 * const did = "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw";
 * await enrolAgent(kv, { agentId: did, publicKey: did, roles: ["agent"] }, "ops");
 * assert.deepEqual((await getAgent(kv, did))?.roles, ["agent"]);
 * kv.close();
 * ```
 */
export async function enrolAgent(
  kv: Deno.Kv,
  input: AgentEnrolment,
  by: string,
  now: number = Date.now(),
): Promise<{ record: AgentRecord; replaced: boolean }> {
  if (!isAgentId(input.agentId)) {
    throw new EnrolmentError(400, "agentId is not a valid agent id");
  }
  let raw: Uint8Array;
  try {
    raw = parseEd25519PublicKey(input.publicKey);
  } catch (err) {
    if (err instanceof KeyFormatError) {
      throw new EnrolmentError(400, `publicKey refused: ${err.message}`);
    }
    throw err;
  }
  if (input.agentId.startsWith("did:key:")) {
    const did = ed25519DidKey(raw);
    if (did !== input.agentId) {
      throw new EnrolmentError(
        400,
        `agentId is a did:key but not the one of publicKey (${did})`,
      );
    }
  }
  const record: AgentRecord = {
    agentId: input.agentId,
    publicKey: b64u(raw),
    roles: [...new Set(input.roles)],
    enrolledAt: now,
    enrolledBy: by,
  };
  const key = gatewayAgentKey(input.agentId);
  const seen = await kv.get<AgentRecord>(key);
  if (seen.value && !input.replace) {
    throw new EnrolmentError(
      409,
      `agent '${input.agentId}' is already enrolled (send "replace": true to re-enrol it)`,
    );
  }
  const res = await kv.atomic().check(seen).set(key, record).commit();
  if (!res.ok) {
    throw new EnrolmentError(
      409,
      `agent '${input.agentId}' was enrolled concurrently; try again`,
    );
  }
  return { record, replaced: seen.value !== null };
}

/** The enrolled agent `agentId`, or null. */
export async function getAgent(
  kv: Deno.Kv,
  agentId: string,
): Promise<AgentRecord | null> {
  if (!isAgentId(agentId)) return null;
  return (await kv.get<AgentRecord>(gatewayAgentKey(agentId))).value;
}

/**
 * The enrolments of `agentIds`, in order (null where there is none): KV
 * reads of up to 10 keys each, all at once, rather than one read after
 * another (a broadcast to 100 agents waited on 100 reads in a row).
 *
 * @example Usage
 * ```ts
 * import { getAgents } from "./enrolment.ts";
 * const kv = await Deno.openKv(":memory:");
 * (await getAgents(kv, ["a1", "not an id!"])).length; // 2 (both null here)
 * kv.close();
 * ```
 */
export async function getAgents(
  kv: Deno.Kv,
  agentIds: readonly string[],
): Promise<(AgentRecord | null)[]> {
  const out: (AgentRecord | null)[] = agentIds.map(() => null);
  const valid = agentIds.flatMap((id, i) => isAgentId(id) ? [i] : []);
  const chunks: number[][] = [];
  for (let i = 0; i < valid.length; i += 10) {
    chunks.push(valid.slice(i, i + 10));
  }
  await Promise.all(chunks.map(async (chunk) => {
    const entries = await kv.getMany<AgentRecord[]>(
      chunk.map((i) => gatewayAgentKey(agentIds[i])),
    );
    entries.forEach((e, j) => out[chunk[j]] = e.value);
  }));
  return out;
}

/** Removes an enrolment; false when there was none. */
export async function removeAgent(
  kv: Deno.Kv,
  agentId: string,
): Promise<boolean> {
  if (!isAgentId(agentId)) return false;
  const key = gatewayAgentKey(agentId);
  const seen = await kv.get<AgentRecord>(key);
  if (!seen.value) return false;
  await kv.atomic().delete(key).commit();
  return true;
}

/** Enrolled agents in id order, at most `limit`. */
export async function listAgents(
  kv: Deno.Kv,
  limit = 1000,
): Promise<AgentRecord[]> {
  const out: AgentRecord[] = [];
  for await (
    const e of kv.list<AgentRecord>({ prefix: gatewayAgentKey() }, { limit })
  ) out.push(e.value);
  return out;
}
