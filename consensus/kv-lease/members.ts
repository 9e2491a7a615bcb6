/**
 * Cluster membership as kv-lease sees it: the node registry records at
 * `nodeKey()` (written by `core/state/registry.ts` as
 * `{id, address, version, load, heartbeatAt, startedAt}`), judged by the age
 * of their last heartbeat.
 *
 * Heartbeats are wall-clock times written by other nodes, so the status is
 * only as good as the hosts' clock sync; it is informational and never used
 * for leadership, which rests on the lease alone.
 *
 * @module
 */
import type { Member } from "../../core/consensus.ts";
import { nodeKey } from "../../core/state/keys.ts";

/** Heartbeat ages that mark a member suspect, then down. */
export interface MemberThresholds {
  /** A member whose heartbeat is at least this old is suspect. @default {5000} */
  suspectAfterMs?: number;
  /** A member whose heartbeat is at least this old is down. @default {15000} */
  downAfterMs?: number;
}

/** Options for {@linkcode readMembers}. */
export interface ReadMembersOptions extends MemberThresholds {
  /** Wall-clock ms to judge ages against. @default {Date.now()} */
  now?: number;
}

/** The part of `Deno.Kv` {@linkcode readMembers} uses. */
export interface MembersKv {
  /** Entries under a key prefix. */
  list<T>(
    selector: { prefix: Deno.KvKey },
    options?: Deno.KvListOptions,
  ): AsyncIterable<Deno.KvEntry<T>>;
}

/**
 * A member's status from its heartbeat age.
 *
 * @example Usage
 * ```ts
 * import { memberStatus } from "./members.ts";
 * memberStatus(1_000); // "up"
 * memberStatus(6_000); // "suspect"
 * memberStatus(20_000); // "down"
 * ```
 */
export function memberStatus(
  ageMs: number,
  thresholds: MemberThresholds = {},
): Member["status"] {
  const suspect = thresholds.suspectAfterMs ?? 5_000;
  const down = thresholds.downAfterMs ?? 15_000;
  if (ageMs >= down) return "down";
  if (ageMs >= suspect) return "suspect";
  return "up";
}

/**
 * Reads every node registry record and returns the members sorted by id.
 * Records without a numeric `heartbeatAt` are skipped.
 *
 * @example Usage
 * ```ts
 * import { readMembers } from "./members.ts";
 * import { nodeKey } from "../../core/state/keys.ts";
 * const kv = await Deno.openKv(":memory:");
 * await kv.set(nodeKey("n1"), { id: "n1", address: "http://a:1", heartbeatAt: 1_000 });
 * const members = await readMembers(kv, { now: 2_000 });
 * members[0].status; // "up"
 * kv.close();
 * ```
 */
export async function readMembers(
  kv: MembersKv,
  options: ReadMembersOptions = {},
): Promise<Member[]> {
  const now = options.now ?? Date.now();
  const members: Member[] = [];
  for await (const entry of kv.list<unknown>({ prefix: nodeKey() })) {
    const v = entry.value;
    if (typeof v !== "object" || v === null) continue;
    const r = v as Record<string, unknown>;
    if (typeof r.heartbeatAt !== "number" || !Number.isFinite(r.heartbeatAt)) {
      continue;
    }
    const id = typeof r.id === "string" ? r.id : String(entry.key.at(-1));
    members.push({
      id,
      address: typeof r.address === "string" ? r.address : "",
      status: memberStatus(now - r.heartbeatAt, options),
      lastSeen: r.heartbeatAt,
    });
  }
  return members.sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}
