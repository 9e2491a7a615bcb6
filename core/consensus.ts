/**
 * The Consensus capability every consensus plugin provides (`consensus:NAME`):
 * who leads, the fencing epoch, and membership.
 *
 * @module
 */

/** A member as consensus sees it. */
export interface Member {
  /** The node's id. */
  id: string;
  /** The node's base URL. */
  address: string;
  /** Whether it answers (`suspect`: missed beats, not yet given up on). */
  status: "up" | "suspect" | "down";
  /** Wall-clock ms of the member's last heartbeat. */
  lastSeen: number;
}

/** A change of leader. `leader` is null while nobody leads. */
export interface LeaderChange {
  /** The new leader's node id, or null. */
  leader: string | null;
  /** The fencing token that goes with this leader. */
  epoch: number;
}

/** What `kernel.get("consensus:*")` returns. */
export interface Consensus {
  /** The plugin's name, e.g. "kv-lease". */
  readonly name: string;
  /** The current leader's node id as this node last saw it, or null. */
  leader(): string | null;
  /** Whether this node may do leader work right now (before its renew deadline). */
  isLeader(): boolean;
  /** The fencing token: increases with every change of leader. 0 before any. */
  epoch(): number;
  /** Calls `fn` on every change this node observes; returns the unsubscribe. */
  onLeaderChange(fn: (change: LeaderChange) => void): () => void;
  /** The cluster's members as this node knows them. */
  members(): Promise<Member[]>;
}
