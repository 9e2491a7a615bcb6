/**
 * The `consensus/kv-lease` plugin: leader election on the node's Deno KV
 * (see `core/state/lease_elector.ts`), provided as the `consensus:kv-lease` capability.
 *
 * Config (under `pluginConfig["kv-lease"]`): `name` (election name, default
 * "plexus"), `leaseMs`/`renewDeadlineMs`/`retryPeriodMs` (Kubernetes'
 * 15000/10000/2000 by default; leaseMs > renewDeadlineMs > 1.2 ×
 * retryPeriodMs), `opTimeoutMs`, and the membership thresholds
 * `suspectAfterMs`/`downAfterMs` (5000/15000).
 *
 * @module
 */
import { z } from "zod";
import type { Consensus } from "../../core/consensus.ts";
import { definePlugin, type Plugin } from "../../core/plugin.ts";
import {
  DEFAULT_LEASE_MS,
  DEFAULT_RENEW_DEADLINE_MS,
  DEFAULT_RETRY_PERIOD_MS,
  LeaseElector,
  validateLeaseDurations,
} from "../../core/state/lease_elector.ts";
import {
  type Checkable,
  type FenceToken,
  guardedAtomic,
} from "../../core/state/fence.ts";
import { readMembers } from "./members.ts";

const ms = z.number().int().positive().max(3_600_000);

/** Schema of the plugin's config. */
export const kvLeaseConfig = z.strictObject({
  /** Election name; nodes with the same name compete. */
  name: z.string().min(1).max(200).default("plexus"),
  leaseMs: ms.default(DEFAULT_LEASE_MS),
  renewDeadlineMs: ms.default(DEFAULT_RENEW_DEADLINE_MS),
  retryPeriodMs: ms.default(DEFAULT_RETRY_PERIOD_MS),
  /** Longest wait for one KV call. Defaults to retryPeriodMs. */
  opTimeoutMs: ms.optional(),
  suspectAfterMs: ms.default(5_000),
  downAfterMs: ms.default(15_000),
}).superRefine((c, ctx) => {
  try {
    validateLeaseDurations(c);
  } catch (err) {
    ctx.addIssue({
      code: "custom",
      path: ["renewDeadlineMs"],
      message: (err as Error).message,
    });
  }
  if (!(c.downAfterMs > c.suspectAfterMs)) {
    ctx.addIssue({
      code: "custom",
      path: ["downAfterMs"],
      message:
        `downAfterMs (${c.downAfterMs}) must be greater than suspectAfterMs (${c.suspectAfterMs})`,
    });
  }
});

/** Config of the plugin after defaults. */
export type KvLeaseConfig = z.infer<typeof kvLeaseConfig>;

/** What `kernel.get("consensus:kv-lease")` returns. */
export interface KvLeaseConsensus extends Consensus {
  /** The election name. */
  readonly election: string;
  /** This term's fence token; throws `NotLeaderError` unless leading. */
  fence(): FenceToken;
  /** Adds the fence check to an atomic operation on the raw KV. */
  guard<A extends Checkable<A>>(op: A): A;
  /**
   * A fenced atomic operation on the node's KV: commits only while this
   * node's term is the latest. Throws `NotLeaderError` unless leading.
   */
  guardedAtomic(): Deno.AtomicOperation;
}

/** The kv-lease plugin (`builtin:consensus/kv-lease`). */
const kvLease: Plugin<KvLeaseConfig> = definePlugin({
  manifest: {
    name: "kv-lease",
    version: "1.0.0",
    kind: "consensus",
    api: "^1",
    provides: ["consensus:kv-lease"],
    requires: ["state:kv"],
    config: kvLeaseConfig,
  },
  setup(ctx) {
    const c = ctx.config;
    // The election is global; ctx.kv is scoped to this plugin's prefix.
    const kv = ctx.kernel.get("state:kv");
    const elector = new LeaseElector({
      kv,
      nodeId: ctx.node.id,
      name: c.name,
      leaseMs: c.leaseMs,
      renewDeadlineMs: c.renewDeadlineMs,
      retryPeriodMs: c.retryPeriodMs,
      opTimeoutMs: c.opTimeoutMs,
      onError: (error, during) =>
        ctx.log.warn("KV call failed during election; retrying", {
          during,
          election: c.name,
          error: error instanceof Error ? error.message : String(error),
        }),
    });
    const labels = { election: c.name };
    const isLeaderGauge = ctx.metrics.gauge(
      "plexus_kv_lease_is_leader",
      "1 while this node leads the election",
    );
    const epochGauge = ctx.metrics.gauge(
      "plexus_kv_lease_epoch",
      "Highest election epoch (fencing token) this node has seen",
    );
    const changes = ctx.metrics.counter(
      "plexus_kv_lease_leader_changes_total",
      "Changes of leader or epoch this node has seen",
    );
    isLeaderGauge.set(0, labels);
    epochGauge.set(0, labels);
    const off = elector.onLeaderChange((change) => {
      changes.inc(labels);
      isLeaderGauge.set(change.leader === ctx.node.id ? 1 : 0, labels);
      epochGauge.set(change.epoch, labels);
      ctx.log.info("election leader changed", {
        election: c.name,
        leader: change.leader,
        epoch: change.epoch,
        self: change.leader === ctx.node.id,
      });
    });
    elector.start();
    const api: KvLeaseConsensus = {
      name: "kv-lease",
      election: c.name,
      leader: () => elector.leader(),
      isLeader: () => elector.isLeader(),
      epoch: () => elector.epoch(),
      onLeaderChange: (fn) => elector.onLeaderChange(fn),
      members: () =>
        readMembers(kv, {
          suspectAfterMs: c.suspectAfterMs,
          downAfterMs: c.downAfterMs,
        }),
      fence: () => elector.fence(),
      guard: (op) => elector.guard(op),
      guardedAtomic: () => guardedAtomic(kv, elector.fence()),
    };
    return Promise.resolve({
      api,
      health: () =>
        Promise.resolve({
          status: "up" as const,
          detail: elector.isLeader()
            ? `leader of '${c.name}', epoch ${elector.epoch()}`
            : `follower of '${c.name}' (leader: ${
              elector.leader() ?? "none"
            }, epoch ${elector.epoch()})`,
        }),
      stop: async (signal) => {
        await elector.stop(signal);
        off();
      },
    });
  },
});

export default kvLease;
