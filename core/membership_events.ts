/**
 * `node.left` for a member that died without leaving, and `node.joined` when
 * a member that was down answers again: the leader watches the registry's
 * heartbeats and announces each change of a member between `up` and `down`
 * once, cluster-wide. The last announced status of each node is kept in KV
 * (`["membership", nodeId]`) and written with check-and-set before the
 * event is emitted, so a new leader, or two nodes that both think they lead
 * for a moment, never announce one transition twice.
 *
 * A node announces its own start and clean shutdown (`core/node.ts`); the
 * leader stays silent for those: a record with `leftAt` left cleanly, and a
 * new `startedAt` is a new process, which emitted its own `node.joined`.
 *
 * The leader is the consensus plugin's, or with none the member with the
 * smallest id among those up.
 *
 * @module
 */
import { type Clock, systemClock } from "./clock.ts";
import type { NodeEvents } from "./events.ts";
import {
  memberStatus,
  type NodeRecord,
  type Registry,
} from "./state/registry.ts";
import { membershipKey } from "./state/keys.ts";

/** A node's membership as last announced. */
export interface Announced {
  status: "up" | "down";
  /** The `startedAt` of the process announced: a new one is a restart. */
  startedAt: number;
}

/** What to record of a member, and which event (if any) to emit. */
export interface Transition {
  next: Announced;
  emit?: "node.left" | "node.joined";
}

/**
 * The change to announce for member `record`, now `status`, last announced
 * as `prev` (undefined: never); null when there is nothing to write. Pure.
 *
 * @example Usage
 * ```ts
 * import { membershipTransition } from "./membership_events.ts";
 * import assert from "node:assert/strict";
 * const rec = { startedAt: 1, leftAt: undefined };
 * const up = { status: "up", startedAt: 1 } as const;
 * assert.deepEqual(membershipTransition(up, rec, "down"), {
 *   next: { status: "down", startedAt: 1 },
 *   emit: "node.left",
 * });
 * assert.equal(membershipTransition(up, rec, "suspect"), null);
 * ```
 */
export function membershipTransition(
  prev: Announced | undefined,
  record: Pick<NodeRecord, "startedAt" | "leftAt">,
  status: "up" | "suspect" | "down",
): Transition | null {
  if (status === "suspect" || prev?.status === status) {
    // A restart between two looks (down and up again unseen) is the node's own news.
    if (prev && prev.startedAt !== record.startedAt && status === "up") {
      return { next: { status, startedAt: record.startedAt } };
    }
    return null;
  }
  const next: Announced = { status, startedAt: record.startedAt };
  // Never seen before: a member found already down is old news; one up
  // announced itself when it started.
  if (!prev) return { next };
  if (status === "down") {
    return record.leftAt === undefined ? { next, emit: "node.left" } : { next };
  }
  return prev.startedAt === record.startedAt
    ? { next, emit: "node.joined" }
    : { next };
}

/** Options for {@linkcode startMembershipEvents}. */
export interface MembershipEventsOptions {
  registry: Pick<Registry, "nodeId" | "nodes" | "thresholds">;
  events: NodeEvents;
  /**
   * Whether this node leads: the consensus plugin's answer, or undefined
   * with no consensus plugin (then the smallest up id leads).
   */
  isLeader: () => boolean | undefined;
  /** How often the leader looks. @default {1000} */
  everyMs?: number;
  clock?: Clock;
  /** Told about a failed look (the loop goes on). */
  onError?: (err: unknown) => void;
}

/** The running watcher. */
export interface MembershipEvents {
  /** One look now (what the timer does): resolves when its events are out. */
  tick(): Promise<void>;
  stop(): void;
}

/**
 * Starts announcing membership changes from `kv`'s registry.
 *
 * @example Usage
 * ```ts ignore
 * const watcher = startMembershipEvents(kv, {
 *   registry, events, isLeader: () => consensus()?.isLeader(),
 * });
 * // on shutdown
 * watcher.stop();
 * ```
 */
export function startMembershipEvents(
  kv: Deno.Kv,
  options: MembershipEventsOptions,
): MembershipEvents {
  const clock = options.clock ?? systemClock;
  const { registry, events } = options;
  let busy: Promise<void> | undefined;
  const look = async () => {
    if (options.isLeader() === false) return;
    const now = clock.now();
    const nodes = await registry.nodes();
    const status = new Map(
      nodes.map((n) => [n.id, memberStatus(n, now, registry.thresholds)]),
    );
    const leads = options.isLeader() ??
      nodes.find((n) => status.get(n.id) === "up")?.id === registry.nodeId;
    if (!leads) return;
    const announced: Deno.KvEntryMaybe<Announced>[] = [];
    for (let i = 0; i < nodes.length; i += 10) { // KV reads 10 keys at most
      announced.push(
        ...await kv.getMany<Announced[]>(
          nodes.slice(i, i + 10).map((n) => membershipKey(n.id)),
        ),
      );
    }
    for (const [i, n] of nodes.entries()) {
      const t = membershipTransition(
        announced[i].value ?? undefined,
        n,
        status.get(n.id)!,
      );
      if (!t) continue;
      const res = await kv.atomic().check(announced[i])
        .set(membershipKey(n.id), t.next).commit();
      // Lost to another announcer: it emits, not us.
      if (!res.ok) continue;
      if (t.emit === "node.left") {
        events.emit("node.left", { nodeId: n.id, reason: "down" });
      } else if (t.emit === "node.joined") {
        events.emit("node.joined", { nodeId: n.id, address: n.address });
      }
    }
  };
  const tick = () =>
    busy ??= look().catch((err) => options.onError?.(err)).finally(() =>
      busy = undefined
    );
  const timer = setInterval(tick, options.everyMs ?? 1000);
  Deno.unrefTimer(timer);
  return { tick, stop: () => clearInterval(timer) };
}
