/**
 * `consensus/raft`: a deterministic Raft core in the style of etcd-io/raft.
 *
 * The core is a pure state machine. Feed it ticks
 * ({@linkcode RaftNode.tick}) and messages ({@linkcode RaftNode.step}); ask
 * it to {@linkcode RaftNode.propose}, {@linkcode RaftNode.readIndex},
 * {@linkcode RaftNode.transferLeader} or
 * {@linkcode RaftNode.proposeConfChange}; then drain a
 * {@linkcode Ready}: persist its snapshot, entries and hard state, only then
 * send its messages, apply its committed entries, and call
 * {@linkcode RaftNode.advance}. Clock and randomness are injected, nothing
 * inside does I/O, so a seeded simulation replays exactly.
 *
 * Included: randomized election timeouts, PreVote and CheckQuorum (on by
 * default), a no-op entry on election, pipelined and batched replication
 * with per-follower flow control, ReadIndex reads (never answered before the
 * leader's no-op commits), proposal forwarding, leader transfer, snapshots
 * with InstallSnapshot, and single-server membership changes (in effect
 * when appended; a leader must first commit an entry of its term; a removed
 * leader steps down once its removal commits).
 *
 * The default export is the plugin (`builtin:consensus/raft`,
 * `--consensus raft`), which provides `consensus:raft`, a
 * {@linkcode RaftConsensus}.
 *
 * @example Usage
 * ```ts
 * import { createRaft, MemoryStorage } from "./mod.ts";
 * const storage = new MemoryStorage();
 * const node = createRaft({ id: "1", peers: ["1"], random: () => 0.3 });
 * node.campaign();
 * node.propose("set x 1");
 * const rd = node.ready();
 * storage.save(rd); // 1. persist
 * // 2. send rd.messages, 3. apply rd.committed
 * rd.committed.map((e) => e.data); // ["", "set x 1"]
 * node.advance(rd); // 4. acknowledge
 * ```
 *
 * @module
 */
export { default } from "./plugin.ts";
export { type RaftConfig, raftConfig, type RaftConsensus } from "./plugin.ts";
export {
  createRaft,
  RaftNode,
  type RaftOptions,
  type RaftStatus,
} from "./core.ts";
export { type AppendResult, RaftLog } from "./log.ts";
export { Inflights, Progress, type ProgressState } from "./progress.ts";
export { type PendingRead, ReadOnly } from "./read_only.ts";
export { MemoryStorage } from "./storage.ts";
export type {
  ConfChange,
  ConfChangeData,
  Entry,
  EntryType,
  HardState,
  Message,
  MessageType,
  PersistedState,
  ReadState,
  Ready,
  Role,
  Snapshot,
} from "./types.ts";
export {
  type DriverStorage,
  type ProposeResult,
  RaftDriver,
  type RaftDriverOptions,
  RaftTimeoutError,
  RaftUnavailableError,
  type ReadResult,
} from "./driver.ts";
export {
  crc32,
  FileStorage,
  type FileStorageOptions,
  type LoadReport,
} from "./file_storage.ts";
export {
  AppliedProposals,
  type AppliedProposalsJson,
  type AppliedProposalsOptions,
} from "./applied_proposals.ts";
export {
  type KvCommand,
  KvMachine,
  type KvResult,
  parseKvCommand,
} from "./kv_machine.ts";
export {
  type LinkMessage,
  type LinkPeer,
  type RaftLinks,
  type RaftLinksOptions,
  raftLinkUrl,
  startLinks,
} from "./links.ts";
export {
  createMembership,
  type MemberAnswer,
  type MemberChange,
  type Membership,
  type MembershipOptions,
  parseMemberAdd,
} from "./members.ts";
