/**
 * The plain, JSON-serialisable values the Raft core takes in and hands out:
 * log entries, messages, the hard state a driver must persist, snapshots and
 * the {@linkcode Ready} batch.
 *
 * @module
 */

/** What an entry carries: application data, or a membership change. */
export type EntryType = "normal" | "conf";

/**
 * One log entry. `data` is opaque to the core for `"normal"` entries (an
 * empty string is the leader's no-op); `"conf"` entries hold a JSON
 * {@linkcode ConfChangeData}.
 *
 * @example Usage
 * ```ts
 * import type { Entry } from "./types.ts";
 * const e: Entry = { term: 1, index: 1, type: "normal", data: "set x 1" };
 * e.index; // 1
 * ```
 */
export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  data: string;
}

/**
 * A membership change as stored in a `"conf"` entry: the change and the full
 * voter set that results, so replaying the log rebuilds every configuration.
 *
 * @example Usage
 * ```ts
 * import type { ConfChangeData } from "./types.ts";
 * const c: ConfChangeData = { type: "add", node: "4", voters: ["1", "2", "3", "4"] };
 * c.voters.length; // 4
 * ```
 */
export interface ConfChangeData {
  type: "add" | "remove";
  node: string;
  voters: string[];
}

/** A membership change to propose: add or remove one voter. */
export interface ConfChange {
  type: "add" | "remove";
  node: string;
}

/** Every message kind that crosses the network. */
export type MessageType =
  | "app"
  | "appResp"
  | "vote"
  | "voteResp"
  | "preVote"
  | "preVoteResp"
  | "heartbeat"
  | "heartbeatResp"
  | "snap"
  | "prop"
  | "readIndex"
  | "readIndexResp"
  | "transferLeader"
  | "timeoutNow";

/**
 * A message between two nodes. Plain data: a driver may serialise, sign and
 * send it as it likes. `term` 0 marks a forwarded local request (`prop`,
 * `readIndex`, `transferLeader`).
 *
 * @example Usage
 * ```ts
 * import type { Message } from "./types.ts";
 * const m: Message = { type: "heartbeat", from: "1", to: "2", term: 3, commit: 7 };
 * JSON.parse(JSON.stringify(m)).commit; // 7
 * ```
 */
export interface Message {
  type: MessageType;
  from: string;
  to: string;
  term: number;
  /** Term of the entry at `index` (append: the previous entry; vote: the last entry). */
  logTerm?: number;
  /** Append: the index before `entries`; append response: the last matching index. */
  index?: number;
  entries?: Entry[];
  commit?: number;
  reject?: boolean;
  /** On a rejected append: the follower's guess of where the logs may agree. */
  rejectHint?: number;
  snapshot?: Snapshot;
  /** ReadIndex request id, echoed through heartbeats; "transfer" on a forced vote. */
  context?: string;
  /** For `transferLeader`: the node that should become leader. */
  transferee?: string;
}

/**
 * What must be on stable storage before any message that depends on it is
 * sent: the current term, the vote in that term, and the commit index.
 *
 * @example Usage
 * ```ts
 * import type { HardState } from "./types.ts";
 * const hs: HardState = { term: 2, vote: "1", commit: 5 };
 * hs.vote; // "1"
 * ```
 */
export interface HardState {
  term: number;
  /** The node voted for in `term`, or "" for none. */
  vote: string;
  commit: number;
}

/**
 * A snapshot of the state machine up to `index` (whose entry had `term`),
 * with the voter set in force at that index. `data` is the application's.
 *
 * @example Usage
 * ```ts
 * import type { Snapshot } from "./types.ts";
 * const s: Snapshot = { index: 10, term: 2, voters: ["1", "2", "3"], data: "{}" };
 * s.index; // 10
 * ```
 */
export interface Snapshot {
  index: number;
  term: number;
  voters: string[];
  data: string;
}

/**
 * A linearizable read is safe once the state machine has applied `index`.
 *
 * @example Usage
 * ```ts
 * import type { ReadState } from "./types.ts";
 * const r: ReadState = { index: 12, context: "read-1" };
 * r.context; // "read-1"
 * ```
 */
export interface ReadState {
  index: number;
  context: string;
}

/** The role a node plays in its current term. */
export type Role = "follower" | "preCandidate" | "candidate" | "leader";

/**
 * One batch of work for the driver. Handle it in this order:
 * 1. persist `snapshot` (discarding the whole log), then `entries`
 *    (truncating any stored entries from `entries[0].index` on) and
 *    `hardState`, durably;
 * 2. only then send `messages`;
 * 3. apply `snapshot` then `committed` to the state machine, serve
 *    `readStates` whose index is applied;
 * 4. call `advance(ready)`.
 *
 * A crash before step 1 completes loses the batch, and nothing that depends
 * on it ever left the node.
 *
 * @example Usage
 * ```ts
 * import { createRaft } from "./core.ts";
 * const node = createRaft({ id: "1", peers: ["1"], random: () => 0 });
 * node.campaign();
 * const rd = node.ready();
 * rd.entries.length; // 1 (the new leader's no-op)
 * node.advance(rd);
 * ```
 */
export interface Ready {
  hardState?: HardState;
  entries: Entry[];
  snapshot?: Snapshot;
  messages: Message[];
  committed: Entry[];
  readStates: ReadState[];
}

/**
 * What a driver reloads after a restart: the last persisted hard state,
 * snapshot and entries after it.
 *
 * @example Usage
 * ```ts
 * import type { PersistedState } from "./types.ts";
 * const empty: PersistedState = { hardState: { term: 0, vote: "", commit: 0 }, entries: [] };
 * empty.entries.length; // 0
 * ```
 */
export interface PersistedState {
  hardState: HardState;
  snapshot?: Snapshot;
  entries: Entry[];
}
