/**
 * Fencing for leader-guarded writes.
 *
 * A lease alone cannot stop a paused or slow former leader from writing after
 * someone else took over (Kleppmann, "How to do distributed locking"). So
 * every acquisition also writes a fencing record at
 * `electionEpochKey(name)` — and only acquisitions write it, never renewals.
 * A guarded atomic operation checks that record's versionstamp as of this
 * node's acquisition: once any node acquires again, the versionstamp moves on
 * and every write of the deposed leader fails its check (`{ok: false}`)
 * inside Deno KV, whatever the deposed node's clock believes.
 *
 * Checking the lease record itself would not do: every renewal changes its
 * versionstamp, so guarded writes would fail after each renew.
 *
 * Use the raw `Deno.Kv` (`kernel.get("state:kv")`): a plugin's scoped `ctx.kv`
 * prefixes keys, which would check the wrong key.
 *
 * @module
 */
import { electionEpochKey } from "./keys.ts";
import { PlexusError } from "../errors.ts";

/** Proof of leadership for one term, to attach to guarded writes. */
export interface FenceToken {
  /** Election name (the lease record is `electionKey(election)`). */
  readonly election: string;
  /** The term's epoch: the fencing number for resources outside Deno KV. */
  readonly epoch: number;
  /** Node id of the leader this token belongs to. */
  readonly holder: string;
  /** Versionstamp of the fencing record written by this term's acquisition. */
  readonly versionstamp: string;
}

/** Anything with Deno KV's `check` on an atomic operation. */
export interface Checkable<A> {
  /** Adds versionstamp checks. */
  check(...checks: Deno.AtomicCheck[]): A;
}

/** Raised when leader-only work is attempted on a node that does not lead. */
export class NotLeaderError extends PlexusError {
  /** Always "NotLeaderError". */
  override name = "NotLeaderError";
  /** Stable code for callers and HTTP error mapping. */
  declare readonly code: "NOT_LEADER";
  /** The leader this node last saw, if any. */
  readonly leader: string | null;
  /**
   * `leader` is the leader this node last saw, if any. Retryable on another
   * node (the leader); HTTP 503.
   */
  constructor(message: string, leader: string | null, options?: ErrorOptions) {
    super("NOT_LEADER", message, {
      retryable: true,
      status: 503,
      cause: options?.cause,
    });
    this.leader = leader;
  }
}

/**
 * The atomic check that fails once another term has begun.
 *
 * @example Usage
 * ```ts
 * import { fenceCheck } from "./fence.ts";
 * const check = fenceCheck({
 *   election: "plexus", epoch: 3, holder: "n1", versionstamp: "00000000000000010000",
 * });
 * check.key; // ["election", "plexus", "epoch"]
 * ```
 */
export function fenceCheck(token: FenceToken): Deno.AtomicCheck {
  return {
    key: electionEpochKey(token.election),
    versionstamp: token.versionstamp,
  };
}

/**
 * Starts an atomic operation on `kv` that commits only while `token`'s term
 * is the latest: add mutations, then `commit()`; `{ok: false}` means the
 * term is over (or one of your own checks failed).
 *
 * @example Usage
 * ```ts
 * import { guardedAtomic } from "./fence.ts";
 * import { electionEpochKey } from "./keys.ts";
 * const kv = await Deno.openKv(":memory:");
 * const { versionstamp } = await kv.set(electionEpochKey("plexus"), { epoch: 1 });
 * const token = { election: "plexus", epoch: 1, holder: "n1", versionstamp };
 * const res = await guardedAtomic(kv, token).set(["jobs", "next"], 7).commit();
 * res.ok; // true
 * await kv.set(electionEpochKey("plexus"), { epoch: 2 }); // another node took over
 * (await guardedAtomic(kv, token).set(["jobs", "next"], 8).commit()).ok; // false
 * kv.close();
 * ```
 */
export function guardedAtomic<A extends Checkable<A>>(
  kv: { atomic(): A },
  token: FenceToken,
): A {
  return kv.atomic().check(fenceCheck(token));
}
