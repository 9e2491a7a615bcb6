/**
 * A {@linkcode Transport} on Apache Kafka (kafkajs 2.2.4). Chosen over
 * @platformatic/kafka 1.22.0 by measurement on Deno (bench/_kafka_clients.ts,
 * 10 000 × 1 KiB: kafkajs produces 14k/s and consumes 34k/s with commits,
 * platformatic 23k/s and 12k/s); end to end the slower side bounds it.
 *
 * - Topic `{prefix}{topic}`, created on first use when `createTopics` (else
 *   the broker's `auto.create.topics.enable` does it). Record value = the
 *   payload's JSON, key = the ordering key, envelope fields in `plexus-*`
 *   headers (wire.ts, docs/wire-format.md).
 * - Publishing: one idempotent producer (acks = all) per transport, replaced
 *   by a new one after a failed send (`_producer.ts`); publishes
 *   queued while a request is in flight go out as the next batch
 *   (`sendBatch`, at most `maxBatchBytes`). Key → partition by Kafka's
 *   default partitioner (murmur2), the same as Java clients.
 * - A subscription is one consumer in group `{prefix}{group}.{topic}`; a
 *   subscription without a group gets a group of its own that starts at the
 *   topic's end when it subscribes and is deleted on close. A new shared
 *   group starts from the earliest record (`startFrom: "all"`), so a member
 *   that dies before the group's first commit loses nothing.
 * - Records are dispatched in offset order; a key's messages run one at a
 *   time (a chain per key), at most `maxInFlight` handlers at once. The
 *   committed offset of a partition is its lowest unfinished offset, so a
 *   crash before a message is finished redelivers it to the member that
 *   takes the partition over (at least once).
 * - `nak(delay)` / a throwing handler: the record is re-published to the
 *   group's retry topic `{prefix}_retry.{group}.{topic}` with
 *   `plexus-attempt` + 1, the error history in `plexus-errors` and
 *   `plexus-not-before`, then the original offset is finished. The
 *   subscription reads the retry topic too and holds such a record until
 *   its time. Partition progress is kept; a retried message loses its place
 *   in its key's order. A subscription without a group retries in memory.
 * - After `maxAttempts`, on `term`, or for a record that is not an envelope
 *   (`bad_message`: a value or key that is not UTF-8, a `plexus-*` header
 *   of the wrong shape, more than `maxMessageBytes` of value and member
 *   headers), the record goes to `{prefix}_dlq.{topic}` with its key and
 *   value bytes as they came and `plexus-dlq-*` headers;
 *   `deadLetters(topic)` reads it back.
 * - A handler that throws and a dead-lettered record are logged and counted
 *   (`../_telemetry.ts`).
 *
 * @module
 */
import {
  type Admin,
  type Consumer,
  type EachBatchPayload,
  Kafka,
  logLevel,
  Partitioners,
  type ProducerBatch,
} from "kafkajs";
import { Buffer } from "node:buffer";
import type { Envelope } from "../../core/envelope.ts";
import type { Logger } from "../../core/observe/logger.ts";
import type { MetricsRegistry } from "../../core/observe/metrics.ts";
import { transportTelemetry } from "../_telemetry.ts";
import { renewingProducer } from "./_producer.ts";
import {
  assertFits,
  type AttemptError,
  backoffDelay,
  type DeadLetter,
  type Delivery,
  type DeliveryHandler,
  type PublishOptions,
  type SubscribeOptions,
  type Subscription,
  type Transport,
  type TransportCaps,
  TransportError,
} from "../../core/transport.ts";
import {
  checkGroup,
  checkTopic,
  deadLetterHeaders,
  decodeDeadLetter,
  decodeRecord,
  dlqTopic,
  encodeRecord,
  type FetchedRecord,
  groupId,
  H,
  headerStrings,
  kafkaTopic,
  retryTopic,
  type WireRecord,
} from "./wire.ts";

/** Options of {@linkcode connectKafka}. */
export interface KafkaOptions {
  /** Bootstrap brokers, `host:port` (array or comma-separated). @default {Deno.env.get("KAFKA_BROKERS") ?? "127.0.0.1:9092"} */
  brokers?: string[] | string;
  /** Prefix of topics and group ids. @default {"plexus."} */
  prefix?: string;
  /** Client id (also the consumer name in error histories). @default {"plexus-<random>"} */
  clientId?: string;
  /**
   * Largest `envelopeBytes`. The broker's `message.max.bytes` (default
   * 1048588) bounds a whole record batch; this leaves 48 KiB of it for the
   * `plexus-*` headers, a retry's error history and batch overhead.
   * @default {1000000}
   */
  maxMessageBytes?: number;
  /** Bytes of one produce batch (a bigger message goes alone). @default {524288} */
  maxBatchBytes?: number;
  /** Create missing topics (admin API) instead of relying on the broker's auto-creation. @default {true} */
  createTopics?: boolean;
  /** Partitions of topics it creates (the DLQ gets 1). @default {3} */
  partitions?: number;
  /** Replication factor of topics it creates. @default {1} */
  replicationFactor?: number;
  /** Where a new shared group starts: every retained record, or the end. @default {"all"} */
  startFrom?: "all" | "new";
  /** Consumer session timeout (the broker bounds it by `group.min.session.timeout.ms`, default 6000). @default {10000} */
  sessionTimeoutMs?: number;
  /** @default {1000} */
  heartbeatIntervalMs?: number;
  /** How long the coordinator waits for members to rejoin. @default {30000} */
  rebalanceTimeoutMs?: number;
  /** Longest wait of an empty fetch. @default {500} */
  fetchMaxWaitMs?: number;
  /** Base of the envelope's backoff after a handler failure. @default {1000} */
  retryBaseMs?: number;
  /** Cap of that backoff. @default {60000} */
  retryMaxMs?: number;
  /** @default {5000} */
  connectTimeoutMs?: number;
  /** Longest wait in `Subscription.close` for deliveries in flight. @default {30000} */
  closeTimeoutMs?: number;
  /**
   * Pause before each offset commit, gathering what finishes meanwhile; a
   * crash redelivers at most about this much more work.
   * @default {20}
   */
  commitIntervalMs?: number;
  /** Warnings for failed handlers and dead letters. */
  log?: Logger;
  /** Counts failed handlers and dead letters. */
  metrics?: MetricsRegistry;
}

/** The Kafka transport, with its client for health checks and tools. */
export interface KafkaTransport extends Transport {
  readonly kafka: Kafka;
  readonly admin: Admin;
  /** Dead letters of `topic` (its `{prefix}_dlq.{topic}`), oldest first. */
  deadLetters(topic: string, opts?: { limit?: number }): Promise<DeadLetter[]>;
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A counting semaphore: at most `n` holders. */
class Slots {
  #free: number;
  #waiters: (() => void)[] = [];
  constructor(n: number) {
    this.#free = n;
  }
  async take(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((r) => this.#waiters.push(r));
  }
  give(): void {
    const w = this.#waiters.shift();
    if (w) w();
    else this.#free++;
  }
}

/** Offsets of one assigned partition: which are dispatched and unfinished. */
interface Tracker {
  topic: string;
  partition: number;
  /** Next offset not yet dispatched. */
  next: number;
  pending: Set<number>;
  committed: number;
}

/**
 * A record to produce: as encoded, or moved to the retry or dead-letter
 * topic with its key and value as the bytes it came with.
 */
type OutRecord = Omit<WireRecord, "key" | "value"> & {
  key: string | Buffer | null;
  value: string | Buffer;
};

interface Queued {
  topic: string;
  record: OutRecord;
  bytes: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

function brokerList(b: string[] | string | undefined): string[] {
  const list = b ?? Deno.env.get("KAFKA_BROKERS") ?? "127.0.0.1:9092";
  return (Array.isArray(list) ? list : list.split(","))
    .map((s) => s.trim()).filter(Boolean);
}

/**
 * `admin.fetchTopicOffsets(topic)`, asked again for a few seconds while
 * Kafka answers with an error it calls retriable: a topic just created (a
 * subscription's, or a dead-letter topic made by the first `term`) may not
 * have its partition leaders elected yet (NOT_LEADER_FOR_PARTITION,
 * LEADER_NOT_AVAILABLE). `pause` is for tests.
 */
export async function offsetsOf(
  admin: Pick<Admin, "fetchTopicOffsets">,
  topic: string,
  pause: (ms: number) => Promise<void> = (ms) =>
    new Promise((r) => setTimeout(r, ms)),
): Promise<Awaited<ReturnType<Admin["fetchTopicOffsets"]>>> {
  for (let attempt = 1;; attempt++) {
    try {
      return await admin.fetchTopicOffsets(topic);
    } catch (err) {
      const retriable = (err as { retriable?: boolean }).retriable ||
        (err as { cause?: { retriable?: boolean } }).cause?.retriable;
      if (!retriable || attempt >= 20) throw err;
      await pause(100 * Math.min(attempt, 5));
    }
  }
}

function unavailable(what: string, err: unknown): TransportError {
  return new TransportError(
    "unavailable",
    `${what}: ${(err as Error)?.message ?? err}`,
    { cause: err },
  );
}

/**
 * Connects to Kafka and returns the transport.
 *
 * @example Usage
 * ```ts ignore
 * import { connectKafka } from "./transport.ts";
 * const t = await connectKafka({ brokers: "127.0.0.1:9092" });
 * await t.subscribe("orders", async (d) => await d.ack(), { group: "billing" });
 * await t.close();
 * ```
 */
export async function connectKafka(
  options: KafkaOptions = {},
): Promise<KafkaTransport> {
  const o = {
    prefix: "plexus.",
    clientId: `plexus-${crypto.randomUUID().slice(0, 8)}`,
    maxMessageBytes: 1_000_000,
    maxBatchBytes: 512 * 1024,
    createTopics: true,
    partitions: 3,
    replicationFactor: 1,
    startFrom: "all" as const,
    sessionTimeoutMs: 10_000,
    heartbeatIntervalMs: 1000,
    rebalanceTimeoutMs: 30_000,
    fetchMaxWaitMs: 500,
    retryBaseMs: 1000,
    retryMaxMs: 60_000,
    connectTimeoutMs: 5000,
    closeTimeoutMs: 30_000,
    commitIntervalMs: 20,
    ...options,
  };
  const report = transportTelemetry("kafka", o);
  const brokers = brokerList(options.brokers);
  const kafka = new Kafka({
    clientId: o.clientId,
    brokers,
    connectionTimeout: o.connectTimeoutMs,
    logLevel: logLevel.NOTHING,
  });
  // Replaced after a failed send: see _producer.ts (an acknowledged publish
  // was lost after a broker restart without this).
  const producer = renewingProducer<ProducerBatch>(() =>
    kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      createPartitioner: Partitioners.DefaultPartitioner,
      allowAutoTopicCreation: true,
    })
  );
  const admin = kafka.admin();
  try {
    await Promise.all([producer.connect(), admin.connect()]);
  } catch (err) {
    await Promise.allSettled([producer.disconnect(), admin.disconnect()]);
    throw unavailable(
      `Cannot connect to Kafka at ${brokers.join(",")}`,
      err,
    );
  }
  let closed = false;
  const caps: TransportCaps = {
    durable: true,
    ordering: "per-key",
    groups: true,
    maxMessageBytes: o.maxMessageBytes,
  };

  // --- topics --------------------------------------------------------------
  const ensured = new Map<string, Promise<void>>();
  function ensureTopic(name: string, partitions = o.partitions) {
    if (!o.createTopics) return Promise.resolve();
    let p = ensured.get(name);
    if (!p) {
      p = admin.createTopics({
        topics: [{
          topic: name,
          numPartitions: partitions,
          replicationFactor: o.replicationFactor,
        }],
        waitForLeaders: true,
      }).then(() => {}, (err) => {
        ensured.delete(name);
        if (/already exists/i.test(String(err?.message))) return;
        throw unavailable(`Cannot create topic '${name}'`, err);
      });
      ensured.set(name, p);
    }
    return p;
  }

  // --- producing -----------------------------------------------------------
  const queue: Queued[] = [];
  let sending = false;
  async function flush() {
    sending = true;
    while (queue.length > 0) {
      let bytes = 0;
      let n = 0;
      while (
        n < queue.length &&
        (n === 0 || bytes + queue[n].bytes <= o.maxBatchBytes)
      ) bytes += queue[n++].bytes;
      const batch = queue.splice(0, n);
      const byTopic = new Map<string, OutRecord[]>();
      for (const q of batch) {
        let l = byTopic.get(q.topic);
        if (!l) byTopic.set(q.topic, l = []);
        l.push(q.record);
      }
      try {
        await producer.sendBatch({
          acks: -1,
          topicMessages: [...byTopic].map(([topic, messages]) => ({
            topic,
            messages,
          })),
        });
        for (const q of batch) q.resolve();
      } catch (err) {
        const e = unavailable("Kafka did not accept the publish", err);
        for (const q of batch) q.reject(e);
      }
    }
    sending = false;
  }
  function produce(topic: string, record: OutRecord): Promise<void> {
    if (closed) {
      return Promise.reject(
        new TransportError("closed", "Cannot publish: the transport is closed"),
      );
    }
    return new Promise<void>((resolve, reject) => {
      let bytes = record.value.length + (record.key?.length ?? 0);
      for (const k in record.headers) {
        bytes += k.length + record.headers[k].length;
      }
      queue.push({ topic, record, bytes, resolve, reject });
      // After this microtask, so publishes issued together go as one batch.
      if (!sending) {
        sending = true;
        queueMicrotask(flush);
      }
    });
  }
  /** Produces until the broker takes it (or the transport closes). */
  async function produceSurely(topic: string, record: OutRecord) {
    for (let wait = 100;; wait = Math.min(wait * 2, 5000)) {
      try {
        await ensureTopic(topic, topic.includes("._dlq.") ? 1 : o.partitions);
        return await produce(topic, record);
      } catch (err) {
        if (closed) throw err;
        await delay(wait);
      }
    }
  }

  const checkedTopics = new Set<string>();

  // --- consuming -----------------------------------------------------------
  const subs = new Set<{ close(): Promise<void> }>();

  async function subscribe(
    topic: string,
    handler: DeliveryHandler,
    opts: SubscribeOptions = {},
  ): Promise<Subscription> {
    if (closed) {
      throw new TransportError(
        "closed",
        "Cannot subscribe: the transport is closed",
      );
    }
    checkTopic(topic, o.prefix);
    if (opts.group !== undefined) checkGroup(opts.group);
    const maxInFlight = Math.max(1, opts.maxInFlight ?? 1);
    const group = opts.group;
    const main = kafkaTopic(o.prefix, topic);
    const retry = group ? retryTopic(o.prefix, topic, group) : undefined;
    const gid = group
      ? groupId(o.prefix, topic, group)
      : `${o.prefix}_solo.${topic}.${crypto.randomUUID().slice(0, 12)}`;
    const topics = retry ? [main, retry] : [main];
    await Promise.all(topics.map((t) => ensureTopic(t)));
    // A subscription of its own starts at the end as of now: the offsets
    // to seek to once assigned (records before them are skipped).
    const startAt = new Map<string, number>();
    if (!group) {
      let offsets;
      try {
        offsets = await offsetsOf(admin, main);
      } catch (err) {
        throw unavailable(`Cannot read the offsets of '${main}'`, err);
      }
      for (const p of offsets) {
        startAt.set(`${main}:${p.partition}`, Number(p.high));
      }
    }
    const consumer: Consumer = kafka.consumer({
      groupId: gid,
      sessionTimeout: o.sessionTimeoutMs,
      heartbeatInterval: o.heartbeatIntervalMs,
      rebalanceTimeout: o.rebalanceTimeoutMs,
      maxWaitTimeInMs: o.fetchMaxWaitMs,
      allowAutoTopicCreation: true,
    });
    const slots = new Slots(maxInFlight);
    const maxBuffered = Math.max(64, maxInFlight * 4);
    let buffered = 0;
    let bufferFreed: () => void = () => {};
    const trackers = new Map<string, Tracker>();
    const chains = new Map<string, Promise<void>>();
    const running = new Set<Promise<void>>();
    let stopping = false; // no more dispatching
    let gone = false; // no more commit retries

    // Commits: one request at a time, coalescing what finished meanwhile.
    const dirty = new Map<string, Tracker>();
    let committing = false;
    async function commitLoop() {
      committing = true;
      while (dirty.size > 0) {
        // Gather what finishes meanwhile into one commit (not while closing).
        if (o.commitIntervalMs > 0 && !stopping) {
          await delay(o.commitIntervalMs);
        }
        const batch = [...dirty.values()].filter((t) =>
          trackers.get(`${t.topic}:${t.partition}`) === t
        );
        dirty.clear();
        const offsets = batch.map((t) => {
          const point = t.pending.size > 0 ? Math.min(...t.pending) : t.next;
          return { t, point };
        }).filter(({ t, point }) => point > t.committed);
        if (offsets.length === 0) continue;
        let failed = offsets;
        try {
          await consumer.commitOffsets(offsets.map(({ t, point }) => ({
            topic: t.topic,
            partition: t.partition,
            offset: String(point),
          })));
          // `committed` moves only on the broker's answer (COMMIT_OFFSETS
          // below): while KafkaJS restarts a crashed consumer, commitOffsets
          // returns without error and without committing.
          failed = offsets.filter(({ t, point }) => t.committed < point);
        } catch {
          // Not a member any more (rebalance) or the broker is away: the
          // next owner resumes from the last commit; retry while we own it.
        }
        if (failed.length === 0) continue;
        if (gone) break;
        for (const { t } of failed) dirty.set(`${t.topic}:${t.partition}`, t);
        await delay(500);
      }
      committing = false;
    }
    consumer.on(consumer.events.COMMIT_OFFSETS, (e) => {
      for (const { topic: tp, partitions } of e.payload.topics) {
        for (const { partition, offset } of partitions) {
          const t = trackers.get(`${tp}:${partition}`);
          // The offset is a Long at run time (a string in kafkajs' types).
          if (t) t.committed = Math.max(t.committed, Number(String(offset)));
        }
      }
    });
    function finish(t: Tracker, offset: number) {
      t.pending.delete(offset);
      dirty.set(`${t.topic}:${t.partition}`, t);
      if (!committing) commitLoop();
    }

    const consumerName = o.clientId;
    function record(
      raw: FetchedRecord,
      extra: Record<string, string>,
    ): OutRecord {
      const headers = { ...headerStrings(raw.headers), ...extra };
      // Key and value move as the bytes they came with (a dead-lettered
      // record that is not UTF-8 keeps them).
      const bytes = (b: Uint8Array) =>
        Buffer.from(b.buffer, b.byteOffset, b.byteLength);
      const key = raw.key === null
        ? null
        : typeof raw.key === "string"
        ? raw.key
        : bytes(raw.key);
      const value = raw.value === null
        ? ""
        : typeof raw.value === "string"
        ? raw.value
        : bytes(raw.value);
      return { key, value, headers };
    }
    async function deadLetter(
      raw: FetchedRecord,
      sourceTopic: string,
      d: { reason: string; attempts: number; errors: AttemptError[] },
      messageId = `${sourceTopic}/${raw.partition}/${raw.offset}`,
    ) {
      await produceSurely(
        dlqTopic(o.prefix, topic),
        record(
          raw,
          deadLetterHeaders({
            ...d,
            group,
            deadAt: Date.now(),
            origin: `${sourceTopic}/${raw.partition}/${raw.offset}`,
          }),
        ),
      );
      report.deadLettered({
        topic,
        messageId,
        reason: d.reason,
        attempts: d.attempts,
        group,
      });
    }

    /** Runs one record through the handler (and its retries, without a group). */
    async function process(
      raw: FetchedRecord,
      sourceTopic: string,
      t: Tracker,
    ) {
      const offset = Number(raw.offset);
      let moved = true;
      try {
        let decoded;
        try {
          decoded = decodeRecord(
            raw,
            topic,
            sourceTopic,
            o.maxMessageBytes,
          );
        } catch (err) {
          await deadLetter(raw, sourceTopic, {
            reason: `bad_message: ${(err as Error).message}`,
            attempts: 0,
            errors: [],
          });
          return;
        }
        let { attempt, errors } = decoded;
        let notBefore = decoded.notBefore;
        for (;;) {
          const wait = notBefore - Date.now();
          if (wait > 0) await delay(wait);
          const outcome = await deliver(
            decoded.envelope,
            decoded.key,
            attempt,
          );
          if (outcome.kind === "ack") return;
          if (outcome.kind === "term") {
            await deadLetter(raw, sourceTopic, {
              reason: outcome.reason,
              attempts: attempt,
              errors,
            }, decoded.envelope.id);
            return;
          }
          errors = [...errors, {
            at: Date.now(),
            attempt,
            error: outcome.error,
            consumer: consumerName,
          }];
          const max = decoded.envelope.delivery.maxAttempts;
          if (attempt >= max) {
            await deadLetter(raw, sourceTopic, {
              reason: `max attempts (${max}) reached`,
              attempts: attempt,
              errors,
            }, decoded.envelope.id);
            return;
          }
          const d = outcome.delayMs ??
            backoffDelay(decoded.envelope.delivery.backoff, attempt, {
              baseMs: o.retryBaseMs,
              maxMs: o.retryMaxMs,
            });
          if (retry) {
            await produceSurely(
              retry,
              record(raw, {
                [H.attempt]: String(attempt + 1),
                [H.errors]: JSON.stringify(errors),
                [H.notBefore]: String(Date.now() + d),
                [H.topic]: decoded.envelope.topic,
                [H.id]: decoded.envelope.id,
              }),
            );
            return;
          }
          attempt++;
          notBefore = Date.now() + d;
        }
      } catch {
        // The transport closed while the record was being moved: leave its
        // offset unfinished so it is read again.
        moved = false;
      } finally {
        if (moved) finish(t, offset);
      }
    }

    type Outcome =
      | { kind: "ack" }
      | { kind: "nak"; delayMs?: number; error: string }
      | { kind: "term"; reason: string };

    /** One attempt: waits for a slot, runs the handler, returns the verdict. */
    async function deliver(
      envelope: Envelope,
      key: string | undefined,
      attempts: number,
    ): Promise<Outcome> {
      await slots.take();
      let outcome: Outcome | undefined;
      const settle = (v: Outcome) => {
        if (outcome) {
          throw new TransportError(
            "invalid_argument",
            `Delivery of '${envelope.id}' is already settled (${outcome.kind})`,
          );
        }
        outcome = v;
        return Promise.resolve();
      };
      const delivery: Delivery = {
        envelope,
        topic,
        key,
        attempts,
        ack: () => settle({ kind: "ack" }),
        nak: (delayMs?: number, error?: string) =>
          settle({ kind: "nak", delayMs, error: error ?? "nak" }),
        inProgress: () => Promise.resolve(),
        term: (reason: string) => settle({ kind: "term", reason }),
        get settled() {
          return outcome !== undefined;
        },
      };
      try {
        await handler(delivery);
        return outcome ?? { kind: "ack" };
      } catch (err) {
        report.handlerFailed({
          topic,
          messageId: envelope.id,
          attempt: attempts,
          error: err,
          group,
        });
        return outcome ??
          { kind: "nak", error: (err as Error)?.message ?? String(err) };
      } finally {
        slots.give();
      }
    }

    function dispatch(raw: FetchedRecord, sourceTopic: string, t: Tracker) {
      const offset = Number(raw.offset);
      t.pending.add(offset);
      t.next = offset + 1;
      buffered++;
      let key: string | undefined;
      if (raw.key !== null) {
        key = typeof raw.key === "string"
          ? raw.key
          : new TextDecoder().decode(raw.key);
      }
      const prev = key === undefined ? undefined : chains.get(key);
      const run: Promise<void> = (async () => {
        if (prev) await prev;
        await process(raw, sourceTopic, t);
      })().finally(() => {
        buffered--;
        bufferFreed();
        running.delete(run);
        if (key !== undefined && chains.get(key) === run) chains.delete(key);
      });
      running.add(run);
      if (key !== undefined) chains.set(key, run);
    }

    async function eachBatch(p: EachBatchPayload) {
      const { batch } = p;
      const tk = `${batch.topic}:${batch.partition}`;
      let t = trackers.get(tk);
      for (const m of batch.messages) {
        if (stopping || !p.isRunning() || p.isStale()) return;
        const offset = Number(m.offset);
        if (!t) {
          t = {
            topic: batch.topic,
            partition: batch.partition,
            next: offset,
            pending: new Set(),
            committed: -1,
          };
          trackers.set(tk, t);
        }
        if (offset < t.next || offset < (startAt.get(tk) ?? 0)) {
          p.resolveOffset(m.offset); // already dispatched here, or before our start
          continue;
        }
        while (buffered >= maxBuffered) {
          await Promise.race([
            new Promise<void>((r) => bufferFreed = r),
            delay(o.heartbeatIntervalMs),
          ]);
          await p.heartbeat();
          if (stopping || !p.isRunning() || p.isStale()) return;
        }
        dispatch(
          {
            key: m.key,
            value: m.value,
            headers: m.headers,
            timestamp: Number(m.timestamp),
            partition: batch.partition,
            offset: m.offset,
          },
          batch.topic,
          t,
        );
        p.resolveOffset(m.offset);
      }
    }

    let joinedResolve!: () => void;
    const joined = new Promise<void>((r) => joinedResolve = r);
    consumer.on(consumer.events.GROUP_JOIN, (e) => {
      const assignment = e.payload.memberAssignment as Record<
        string,
        number[]
      >;
      const owned = new Set<string>();
      for (const [tp, parts] of Object.entries(assignment)) {
        for (const n of parts) owned.add(`${tp}:${n}`);
      }
      for (const k of [...trackers.keys()]) {
        if (!owned.has(k)) trackers.delete(k);
      }
      if (!group) {
        for (const k of owned) {
          const at = startAt.get(k);
          if (at === undefined || trackers.has(k)) continue;
          const [tp, n] = [
            k.slice(0, k.lastIndexOf(":")),
            Number(k.slice(k.lastIndexOf(":") + 1)),
          ];
          try {
            consumer.seek({ topic: tp, partition: n, offset: String(at) });
          } catch { /* the skip in eachBatch covers it */ }
        }
      }
      joinedResolve();
    });
    try {
      await consumer.connect();
      await consumer.subscribe({
        topics,
        fromBeginning: group ? o.startFrom === "all" : true,
      });
      await consumer.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        partitionsConsumedConcurrently: 1,
        eachBatch,
      });
      const timeout = o.sessionTimeoutMs + o.rebalanceTimeoutMs;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        joined,
        new Promise((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new Error(`no partition assignment within ${timeout} ms`),
              ),
            timeout,
          );
        }),
      ]).finally(() => clearTimeout(timer));
    } catch (err) {
      await consumer.disconnect().catch(() => {});
      throw unavailable(`Cannot subscribe to '${topic}'`, err);
    }

    let closing: Promise<void> | undefined;
    const sub = {
      topic,
      group,
      close(): Promise<void> {
        closing ??= (async () => {
          stopping = true;
          try {
            consumer.pause(topics.map((t) => ({ topic: t })));
          } catch { /* not running */ }
          const end = Date.now() + o.closeTimeoutMs;
          while (running.size > 0 && Date.now() < end) {
            await Promise.race([
              Promise.allSettled([...running]),
              delay(Math.max(0, end - Date.now())),
            ]);
          }
          const flushBy = Date.now() + 2000;
          if (dirty.size > 0 && !committing) commitLoop();
          while (committing && Date.now() < flushBy) await delay(10);
          gone = true;
          await consumer.disconnect().catch(() => {});
          if (!group) await admin.deleteGroups([gid]).catch(() => {});
          subs.delete(sub);
        })();
        return closing;
      },
    };
    subs.add(sub);
    return sub;
  }

  // --- dead letters --------------------------------------------------------
  async function deadLetters(
    topic: string,
    opts: { limit?: number } = {},
  ): Promise<DeadLetter[]> {
    checkTopic(topic, o.prefix);
    const dlq = dlqTopic(o.prefix, topic);
    let ends: { partition: number; low: number; high: number }[];
    try {
      if (!(await admin.listTopics()).includes(dlq)) return [];
      ends = (await offsetsOf(admin, dlq))
        .map((p) => ({
          partition: p.partition,
          low: Number(p.low),
          high: Number(p.high),
        }))
        .filter((p) => p.high > p.low);
    } catch (err) {
      throw unavailable(`Cannot read the dead letters of '${topic}'`, err);
    }
    if (ends.length === 0) return [];
    const gid = `${o.prefix}_dlqread.${crypto.randomUUID().slice(0, 12)}`;
    const reader = kafka.consumer({
      groupId: gid,
      sessionTimeout: o.sessionTimeoutMs,
      heartbeatInterval: o.heartbeatIntervalMs,
      maxWaitTimeInMs: 100,
    });
    const letters: DeadLetter[] = [];
    const left = new Map(ends.map((p) => [p.partition, p.high]));
    try {
      await reader.connect();
      await reader.subscribe({ topics: [dlq], fromBeginning: true });
      let done!: () => void;
      const finished = new Promise<void>((r) => done = r);
      await reader.run({
        autoCommit: false,
        eachBatch: ({ batch }) => {
          const high = left.get(batch.partition);
          for (const m of batch.messages) {
            if (high === undefined || Number(m.offset) >= high) break;
            letters.push(decodeDeadLetter(
              {
                key: m.key,
                value: m.value,
                headers: m.headers,
                timestamp: Number(m.timestamp),
                partition: batch.partition,
                offset: m.offset,
              },
              topic,
              dlq,
            ));
            if (Number(m.offset) >= high - 1) left.delete(batch.partition);
          }
          if (left.size === 0) done();
          return Promise.resolve();
        },
      });
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        finished,
        new Promise((_, reject) => {
          timer = setTimeout(
            () => reject(new Error("timed out reading the DLQ topic")),
            o.sessionTimeoutMs + o.rebalanceTimeoutMs,
          );
        }),
      ]).finally(() => clearTimeout(timer));
    } catch (err) {
      throw unavailable(`Cannot read the dead letters of '${topic}'`, err);
    } finally {
      await reader.disconnect().catch(() => {});
      await admin.deleteGroups([gid]).catch(() => {});
    }
    letters.sort((a, b) => a.deadAt - b.deadAt);
    return opts.limit === undefined ? letters : letters.slice(0, opts.limit);
  }

  return {
    name: "kafka",
    caps,
    kafka,
    admin,
    async publish(topic: string, envelope: Envelope, opts?: PublishOptions) {
      if (!checkedTopics.has(topic)) {
        checkTopic(topic, o.prefix);
        checkedTopics.add(topic);
      }
      // UTF-8 is at most 3 bytes per UTF-16 unit: count exactly only near the limit.
      if (JSON.stringify(envelope).length * 3 > o.maxMessageBytes) {
        assertFits(envelope, o.maxMessageBytes);
      }
      const name = kafkaTopic(o.prefix, topic);
      await ensureTopic(name);
      await produce(name, encodeRecord(envelope, opts?.key));
    },
    subscribe,
    deadLetters,
    async close() {
      if (closed) return;
      await Promise.allSettled([...subs].map((s) => s.close()));
      closed = true;
      while (sending) await delay(10);
      await Promise.allSettled([producer.disconnect(), admin.disconnect()]);
    },
  };
}
