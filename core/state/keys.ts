/**
 * Every Deno KV key layout Plexus uses lives here, so the keyspace can be
 * read in one place.
 *
 * ```
 * ["plugins", plugin, ...]                       plugin-private keyspace (ctx.kv)
 * ["kernel", "health-probe"]                     read by /health
 * ["queue", q, "msg", id]                        queue message record
 * ["queue", q, "seg", segId]                     packed segment: the ready messages one windowed commit enqueued (≤ 60 KiB)
 * ["queue", q, "segstate", segId]                a segment's leases, acked and exploded positions (absent until its first claim)
 * ["queue", q, "segdone", finishedAt, segId]     a segment whose messages are all settled (a sweep deletes it doneRetentionMs later)
 * ["queue", q, "ready", 9 - priority, vs]        ready index → [ids] enqueued by the commit with versionstamp vs (FIFO)
 * ["queue", q, "delayed", availableAt, id]       delayed index → id
 * ["queue", q, "inflight", leaseUntil, id]       lease index → id ({seg, lease} when id is "segId/leaseId", a packed claim)
 * ["queue", q, "dead", deadAt, id]               dead-letter index → id
 * ["queue", q, "idem", key]                      idempotency key → {id, until}
 * ["queue", q, "count", state]                   KvU64 counters per state
 * ["queue", q, "result", id, ref, i]             chunk i of a result too large for its done record (written first; expireIn past it)
 * ["queue", q, "cancel", id]                     {reason, at}: an in-flight message was cancelled (its runner polls this)
 * ["queue", q, "progress", id]                   {fraction, message?, at}: the latest progress a running handler reported
 * ["sessions", tokenHash]                        session record
 * ["sessions-by-subject", subject, tokenHash]    index for listing/revoking a subject's sessions
 * ["login-link-used", jti]                       a redeemed one-time dashboard login link (expireIn past its exp)
 * ["election", name]                             lease record {holder, nonce, epoch, ...}
 * ["election", name, "epoch"]                    fencing record {epoch, holder, nonce}, written only on acquisition
 * ["nodes", nodeId]                              node registry record
 * ["membership", nodeId]                         the leader's last announced status of a node {status, startedAt} (node.left/joined once per transition)
 * ["jwt-revoked", jti]                           revoked JWT id → {revokedAt, exp} (expireIn past exp)
 * ["jwt-revocations"]                            KvU64 count of revocations: a change means reload the revoked ids
 * ["ratelimit", scope, id]                       GCRA state {tat} per principal/IP/handshake scope
 * ["sig-nonce", keyid, nonce]                    RFC 9421 nonce replay store (expireIn past max age)
 * ["audit", at, n, vs]                           audit records of mutating calls, one group commit's as a JSON array (bytes; older values hold one record object), at and n = the earliest record's time and the node's call counter (call order within a ms), vs = commit versionstamp (unique across nodes); expireIn = retention
 * ["keys", keyid]                                trusted key (node or enrolled service key) for JWTs and RFC 9421
 * ["sealing", "keys", id]                        a sealed-payload recipient's public keys {id, x25519, ed25519, sig?, updatedAt} (id: node:ID, or agent:ID with sig, the agent's signed key statement)
 * ["transport-routing", "done", group, id]       exactly-once mark: message id handled by consumer group {topic, at} (expireIn = routing.dedupWindowMs)
 * ["gateway", "agents", agentId]                 enrolled agent {agentId, publicKey, roles, enrolledAt, enrolledBy}
 * ["gateway", "presence", agentId]               where the agent is connected {connected, nodeId, address, session, lastSeen, channels, ...}
 * ["gateway", "outbox", agentId, channel]        the agent's durable queue for one backend channel name → {queue}
 * ["gateway", "body", queue, messageId, i]       chunk i of a queued message body too large for one KV value
 * ["events", "log", stream, vs]                 events appended to `stream` by the commit with versionstamp vs, in offset order
 * ["events", "time", stream, at, vs]            time index: wall-clock ms of that batch's first event (replay from a time, retention by age)
 * ["events", "count", stream]                   KvU64 events held in the stream's log (its keys list the streams)
 * ["events", "head"]                            set by every append: its versionstamp is the newest append's
 * ["events", "cursor", name]                    durable cursor of a named subscriber {offset, at}
 * ["sagas", "saga", id]                         saga state (plugins/sagas), written after every transition
 * ["sagas", "open", id]                         index of sagas not finished → {createdAt}
 * ["sagas", "timer", at, id, step]              a retry due at `at` (ms) for a saga's step
 * ["sagas", "dead", id, step]                   a dead-lettered compensation {error, at}, for an operator
 * ["sagas", "kick", id]                         a saga a non-leader started or cancelled, for the leader to drive
 * ["sagas", "done", at, id]                    a saga that finished at `at` (ms), for retention
 * ["sagas", "status", status, id]              index of sagas by status (GET /api/v1/sagas?status=)
 * ["test", ...]                                  written by test fixtures only
 * ```
 *
 * Agent resumption tokens are sessions (`["sessions", tokenHash]`) of kind
 * `agent` with subject `agent:{agentId}`.
 *
 * @module
 */

/** Root prefix for plugin-private keyspaces: `["plugins", name, ...]`. */
export const PLUGINS_PREFIX = "plugins";
/** Kernel bookkeeping: `["kernel", ...]`. */
export const KERNEL_PREFIX = "kernel";

/** The prefix of plugin `name`'s private keyspace. */
export function pluginPrefix(name: string): Deno.KvKey {
  return [PLUGINS_PREFIX, name];
}

/** Key the health check reads to prove KV answers. */
export const HEALTH_PROBE_KEY: Deno.KvKey = [KERNEL_PREFIX, "health-probe"];

/** States a queue message moves through. */
export type QueueCountState = "ready" | "delayed" | "inflight" | "dead";

/** Key layout of durable queue `q`. */
export function queueKeys(q: string) {
  return {
    all: ["queue", q] as Deno.KvKey,
    msg: (id: string): Deno.KvKey => ["queue", q, "msg", id],
    msgs: ["queue", q, "msg"] as Deno.KvKey,
    readyPrefix: ["queue", q, "ready"] as Deno.KvKey,
    /** `seq` is a versionstamp (or `kv.commitVersionstamp()` when writing). */
    ready: (
      priority: number,
      seq: string | symbol,
    ): Deno.KvKey => ["queue", q, "ready", 9 - priority, seq as string],
    delayedPrefix: ["queue", q, "delayed"] as Deno.KvKey,
    delayed: (
      at: number,
      id: string,
    ): Deno.KvKey => ["queue", q, "delayed", at, id],
    inflightPrefix: ["queue", q, "inflight"] as Deno.KvKey,
    inflight: (
      until: number,
      id: string,
    ): Deno.KvKey => ["queue", q, "inflight", until, id],
    deadPrefix: ["queue", q, "dead"] as Deno.KvKey,
    dead: (at: number, id: string): Deno.KvKey => ["queue", q, "dead", at, id],
    idem: (key: string): Deno.KvKey => ["queue", q, "idem", key],
    /** Packed segment `segId`: messages one windowed commit enqueued. */
    seg: (segId: string): Deno.KvKey => ["queue", q, "seg", segId],
    /** Leases, acked and exploded positions of segment `segId`. */
    segState: (segId: string): Deno.KvKey => ["queue", q, "segstate", segId],
    segDonePrefix: ["queue", q, "segdone"] as Deno.KvKey,
    /** A finished segment, for the sweep that deletes it after retention. */
    segDone: (at: number, segId: string): Deno.KvKey => [
      "queue",
      q,
      "segdone",
      at,
      segId,
    ],
    /** Set when an in-flight message is cancelled; its holder polls it (small on purpose). */
    cancel: (id: string): Deno.KvKey => ["queue", q, "cancel", id],
    progress: (id: string): Deno.KvKey => ["queue", q, "progress", id],
    count: (state: QueueCountState): Deno.KvKey => ["queue", q, "count", state],
    /**
     * Chunk `index` of result `ref` of message `id` (or the prefix of the
     * result's chunks, or of all the queue's stored results).
     */
    result: (id?: string, ref?: string, index?: number): Deno.KvKey =>
      id === undefined
        ? ["queue", q, "result"]
        : ref === undefined
        ? ["queue", q, "result", id]
        : index === undefined
        ? ["queue", q, "result", id, ref]
        : ["queue", q, "result", id, ref, index],
  };
}

/** Session record by hashed token. */
export function sessionKey(tokenHash: string): Deno.KvKey {
  return ["sessions", tokenHash];
}
/** Index of a subject's sessions. */
export function sessionsBySubjectKey(
  subject: string,
  tokenHash?: string,
): Deno.KvKey {
  return tokenHash === undefined
    ? ["sessions-by-subject", subject]
    : ["sessions-by-subject", subject, tokenHash];
}

/** Mark of a redeemed one-time login link (`plexus login-link`). */
export function loginLinkUsedKey(jti: string): Deno.KvKey {
  return ["login-link-used", jti];
}

/** Lease record of election `name`. */
export function electionKey(name: string): Deno.KvKey {
  return ["election", name];
}

/**
 * What the leader last announced of node `nodeId`'s membership (or the
 * prefix of all of them): `node.left`/`node.joined` on a change only.
 */
export function membershipKey(nodeId?: string): Deno.KvKey {
  return nodeId === undefined ? ["membership"] : ["membership", nodeId];
}

/** Node registry record (or the prefix of all of them). */
export function nodeKey(nodeId?: string): Deno.KvKey {
  return nodeId === undefined ? ["nodes"] : ["nodes", nodeId];
}

/**
 * Fencing record of election `name`: `{epoch, holder, nonce}`, written only
 * when leadership is acquired (never on renewal), so its versionstamp changes
 * exactly when the epoch does and leader-guarded writes can check it.
 */
export function electionEpochKey(name: string): Deno.KvKey {
  return ["election", name, "epoch"];
}

/** A revoked JWT id, or the prefix of all of them. */
export function revokedJtiKey(jti?: string): Deno.KvKey {
  return jti === undefined ? ["jwt-revoked"] : ["jwt-revoked", jti];
}

/** The revocation counter, bumped with every revocation (KvU64). */
export const REVOCATIONS_KEY: Deno.KvKey = ["jwt-revocations"];

/** GCRA state of `id` (a principal, an IP) within a limit `scope`. */
export function rateLimitKey(scope: string, id: string): Deno.KvKey {
  return ["ratelimit", scope, id];
}

/** A seen RFC 9421 signature nonce for `keyid`. */
export function signatureNonceKey(keyid: string, nonce: string): Deno.KvKey {
  return ["sig-nonce", keyid, nonce];
}

/**
 * A value of audit records (or the prefix of all of them, in time order; or
 * the start of those from `at`): the records of one group commit spanning at
 * most a second, keyed by the earliest. `n` counts the node's calls, so
 * records of one millisecond sort in call order (records are written in
 * group commits, and KV allows a versionstamp only as a key's last part);
 * `vs` is the commit versionstamp (pass `kv.commitVersionstamp()`), so two
 * nodes' values never share a key.
 */
export function auditKey(
  at?: number,
  n?: number,
  vs?: string | symbol,
): Deno.KvKey {
  if (at === undefined) return ["audit"];
  if (n === undefined) return ["audit", at];
  return ["audit", at, n, vs as string];
}

/** A trusted key (a node's, or an enrolled service key), or the prefix of all of them. */
export function trustedKeyKey(keyid?: string): Deno.KvKey {
  return keyid === undefined ? ["keys"] : ["keys", keyid];
}

/** A recipient's public keys for sealed payloads (or the prefix of all of them). */
export function sealingKeyKey(id?: string): Deno.KvKey {
  return id === undefined ? ["sealing", "keys"] : ["sealing", "keys", id];
}

/** The exactly-once mark of message `id` handled by consumer `group` (transport routing). */
export function transportDoneKey(group: string, id: string): Deno.KvKey {
  return ["transport-routing", "done", group, id];
}

/** An enrolled agent (or the prefix of all of them). */
export function gatewayAgentKey(agentId?: string): Deno.KvKey {
  return agentId === undefined
    ? ["gateway", "agents"]
    : ["gateway", "agents", agentId];
}

/** Where an agent is connected (or the prefix of every agent's record). */
export function gatewayPresenceKey(agentId?: string): Deno.KvKey {
  return agentId === undefined
    ? ["gateway", "presence"]
    : ["gateway", "presence", agentId];
}

/**
 * A counter every presence write that changes who is connected where, or
 * to which channels, adds one to (heartbeats do not): readers of the whole
 * list re-read it only when it moved.
 */
export function gatewayPresenceVersionKey(): Deno.KvKey {
  return ["gateway", "presence-version"];
}

/** The index of an agent's durable queues, one per backend channel name. */
export function gatewayOutboxKey(
  agentId: string,
  channel?: string,
): Deno.KvKey {
  return channel === undefined
    ? ["gateway", "outbox", agentId]
    : ["gateway", "outbox", agentId, channel];
}

/**
 * Chunk `index` of a queued message body (or the prefix of all its chunks,
 * or of all the queue's bodies).
 */
export function gatewayBodyKey(
  queue: string,
  messageId?: string,
  index?: number,
): Deno.KvKey {
  if (messageId === undefined) return ["gateway", "body", queue];
  return index === undefined
    ? ["gateway", "body", queue, messageId]
    : ["gateway", "body", queue, messageId, index];
}

/**
 * Event store keys (`plugins/events`): the batch of `stream` committed with
 * versionstamp `vs` (pass `kv.commitVersionstamp()` when writing), so a
 * stream's log lists in commit order, which is the cluster-wide order.
 */
export function eventLogKey(stream?: string, vs?: string | symbol): Deno.KvKey {
  return stream === undefined
    ? ["events", "log"]
    : vs === undefined
    ? ["events", "log", stream]
    : ["events", "log", stream, vs as string];
}

/** Time index of an event stream: `at` is the batch's first event's wall-clock ms. */
export function eventTimeKey(
  stream: string,
  at?: number,
  vs?: string | symbol,
): Deno.KvKey {
  return at === undefined
    ? ["events", "time", stream]
    : vs === undefined
    ? ["events", "time", stream, at]
    : ["events", "time", stream, at, vs as string];
}

/** KvU64 count of a stream's stored events (or the prefix of every stream's). */
export function eventCountKey(stream?: string): Deno.KvKey {
  return stream === undefined
    ? ["events", "count"]
    : ["events", "count", stream];
}

/** Set by every event append; its versionstamp is the newest append's. */
export const EVENT_HEAD_KEY: Deno.KvKey = ["events", "head"];

/** A named event subscriber's durable cursor. */
export function eventCursorKey(name: string): Deno.KvKey {
  return ["events", "cursor", name];
}

/** Saga keys (`plugins/sagas`): state, open index, due timers, dead letters. */
export const sagaKeys = {
  saga: (id: string): Deno.KvKey => ["sagas", "saga", id],
  sagaPrefix: ["sagas", "saga"] as Deno.KvKey,
  openPrefix: ["sagas", "open"] as Deno.KvKey,
  open: (id: string): Deno.KvKey => ["sagas", "open", id],
  timerPrefix: ["sagas", "timer"] as Deno.KvKey,
  timer: (at: number, id: string, step: string): Deno.KvKey => [
    "sagas",
    "timer",
    at,
    id,
    step,
  ],
  deadPrefix: ["sagas", "dead"] as Deno.KvKey,
  dead: (id: string, step: string): Deno.KvKey => ["sagas", "dead", id, step],
  kickPrefix: ["sagas", "kick"] as Deno.KvKey,
  kick: (id: string): Deno.KvKey => ["sagas", "kick", id],
  donePrefix: ["sagas", "done"] as Deno.KvKey,
  done: (at: number, id: string): Deno.KvKey => ["sagas", "done", at, id],
  statusPrefix: ["sagas", "status"] as Deno.KvKey,
  status: (status: string, id: string): Deno.KvKey => [
    "sagas",
    "status",
    status,
    id,
  ],
};
