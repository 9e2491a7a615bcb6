/**
 * `consensus/kv-lease`: leader election on Deno KV leases with fencing.
 *
 * The default export is the plugin (`builtin:consensus/kv-lease`), which
 * provides `consensus:kv-lease`, a {@linkcode KvLeaseConsensus}. The elector
 * and the fencing helpers (which live in `core/state/`) and the membership
 * reader are exported for direct use.
 *
 * @example Usage
 * ```ts
 * import kvLease, { type KvLeaseConsensus } from "./mod.ts";
 * import { createTestKernel } from "../../core/testing.ts";
 * await using t = await createTestKernel([kvLease], {
 *   pluginConfig: { "kv-lease": { leaseMs: 300, renewDeadlineMs: 200, retryPeriodMs: 50 } },
 * });
 * const consensus = t.kernel.get<KvLeaseConsensus>("consensus:kv-lease");
 * consensus.name; // "kv-lease"
 * ```
 *
 * @module
 */
export { default } from "./plugin.ts";
export {
  type KvLeaseConfig,
  kvLeaseConfig,
  type KvLeaseConsensus,
} from "./plugin.ts";
export {
  DEFAULT_LEASE_MS,
  DEFAULT_RENEW_DEADLINE_MS,
  DEFAULT_RETRY_PERIOD_MS,
  type ElectionAtomic,
  type ElectionKv,
  type ElectionRecord,
  type EpochRecord,
  type LeaseDurations,
  LeaseElector,
  type LeaseElectorOptions,
  RETRY_JITTER,
  validateLeaseDurations,
} from "../../core/state/lease_elector.ts";
export {
  type Checkable,
  fenceCheck,
  type FenceToken,
  guardedAtomic,
  NotLeaderError,
} from "../../core/state/fence.ts";
export {
  type MembersKv,
  memberStatus,
  type MemberThresholds,
  readMembers,
  type ReadMembersOptions,
} from "./members.ts";
