/**
 * `consensus/pbft`: Practical Byzantine Fault Tolerance (Castro & Liskov,
 * OSDI 1999 and TOCS 2002) as a deterministic core, a driver, links and a
 * file log, in the shape of `consensus/raft`.
 *
 * The core ({@linkcode PbftNode}) is a pure state machine: feed it
 * messages ({@linkcode PbftNode.step}), client requests
 * ({@linkcode PbftNode.request}), checkpoints of the application state
 * ({@linkcode PbftNode.checkpoint}) and ticks ({@linkcode PbftNode.tick});
 * drain a {@linkcode PbftReady}: persist, only then send, then execute.
 * Cryptography is injected ({@linkcode PbftAuth}): {@linkcode createPbftAuth}
 * gives SHA-256, HMAC-SHA256 on keys each pair of replicas agrees by X25519,
 * and Ed25519 signatures.
 *
 * The default export is the plugin (`builtin:consensus/pbft`,
 * `--consensus pbft`), which provides `consensus:pbft`, a
 * {@linkcode PbftConsensus}, and the replicated KV at `/api/v1/pbft/kv/{key}`.
 *
 * @example Usage
 * ```ts ignore
 * import { createPbft } from "./mod.ts";
 * const node = createPbft({ id: "a", replicas: ["a", "b", "c", "d"], auth });
 * node.request(signRequest(clientAuth, { client: "c1", t: 1, op: "…" }));
 * const rd = node.ready(); // persist rd.compact/rd.persist, send rd.messages, execute rd.executed
 * ```
 *
 * @module
 */
export { default } from "./plugin.ts";
export { type PbftConfig, pbftConfig, type PbftConsensus } from "./plugin.ts";
export {
  batchDigest,
  createPbft,
  macInput,
  PbftNode,
  type PbftOptions,
  type PbftStatus,
  requestSigner,
  requestSignInput,
  signInput,
  signRequest,
} from "./core.ts";
export { createPbftAuth, decodeKey32, type PbftAuthOptions } from "./auth.ts";
export {
  PbftDriver,
  type PbftDriverOptions,
  type PbftDriverStorage,
  PbftTimeoutError,
  PbftUnavailableError,
  type SubmitResult,
} from "./driver.ts";
export { PbftFileLog, type PbftFileLogOptions } from "./file_log.ts";
export {
  parsePbftKvOp,
  type PbftKvOp,
  type PbftKvResult,
  PbftKvState,
} from "./kv_state.ts";
export type {
  Checkpoint,
  ClientResult,
  Commit,
  Executed,
  FetchState,
  NewView,
  PbftAuth,
  PbftMessage,
  PbftPayload,
  PbftReady,
  PbftRecord,
  PbftRequest,
  Prepare,
  PreparedEntry,
  PrePrepare,
  PrePreparedEntry,
  Reply,
  RequestRelay,
  StableCheckpoint,
  StateTransfer,
  Status,
  ViewChange,
} from "./types.ts";
