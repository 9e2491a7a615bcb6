/**
 * A {@linkcode Transport} on NATS (npm `@nats-io/transport-node` +
 * `@nats-io/jetstream` 3.4.0, chosen over `nats` 2.29.3 by measurement on
 * Deno: bench/README.md). Two modes:
 *
 * `jetstream` (default; durable, per-key order, groups, dead letters):
 * - One stream per topic family (wire.ts), created on first use; a publish
 *   resolves with JetStream's acknowledgement (stored), `Nats-Msg-Id` = the
 *   envelope id, so a re-publish within the duplicate window is dropped.
 * - A subscription is a set of pull consumers on the topic's stream: one for
 *   unkeyed messages and one per key partition (`max_ack_pending` 1, so each
 *   partition has one message in flight across the whole group: a key's
 *   messages run one at a time, in order, a retried one in place). A group's
 *   consumers are durable (`consumerOf(group, topic)`); a subscription
 *   without a group gets ephemeral ones, removed on close.
 * - Ack after the handler; `nak(delay)`, `inProgress` (`+WPI`) and the end of
 *   a message are JetStream's own verbs. Attempts are JetStream's delivery
 *   count; `ackWaitMs` after a consumer dies its messages go to another
 *   member. Failed attempts are recorded in the `_ERRORS` stream until the
 *   message is done.
 * - After `maxAttempts` (or `term`, or for a message that is not an envelope:
 *   `bad_message`) the message is published to the `_DLQ` stream with its
 *   error history, then terminated (`+TERM`).
 * - The client reconnects on its own; consumers and streams live on the
 *   server, so a restarted server resumes where it was.
 *
 * `core` (at-most-once, no broker storage): subjects as above, groups are
 * NATS queue groups, `nak` redelivers from memory, dead letters are only
 * logged and counted (no `deadLetters`). Caps: not durable, no order.
 *
 * The driver is imported inside {@linkcode connectNats}; a missing one fails
 * with an install hint.
 *
 * @module
 */
import type * as NatsCore from "@nats-io/transport-node";
import type * as NatsJs from "@nats-io/jetstream";
import type { Envelope } from "../../core/envelope.ts";
import type { Logger } from "../../core/observe/logger.ts";
import type { MetricsRegistry } from "../../core/observe/metrics.ts";
import { transportTelemetry } from "../_telemetry.ts";
import { type NatsRequestReply, natsRequestReply } from "./request_reply.ts";
import {
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
  checkTopic,
  consumerOf,
  deadLetterHeaders,
  decodeBody,
  decodeDeadLetter,
  dlqSubject,
  encodeBody,
  errorsSubject,
  familyOf,
  familySubjects,
  H,
  partitionOf,
  partitionSubject,
  streamOf,
  streamPrefix,
  subjectOf,
} from "./wire.ts";

/** Options of {@linkcode connectNats}. */
export interface NatsOptions {
  /** Server URLs. @default {Deno.env.get("NATS_URL") ?? "nats://127.0.0.1:4222"} */
  servers?: string | string[];
  /** `jetstream` (durable) or `core` (at-most-once). @default {"jetstream"} */
  mode?: "jetstream" | "core";
  /** Subject prefix (stream names use it upper-cased). @default {"plexus."} */
  prefix?: string;
  /**
   * Largest `envelopeBytes`; the server's `max_payload` (default 1 MiB)
   * must leave 4 KiB more for headers. @default {1000000}
   */
  maxMessageBytes?: number;
  /** Partition subjects per topic for keyed messages; equal on every node. @default {8} */
  partitions?: number;
  /** Unacknowledged time after which JetStream redelivers (a dead consumer's messages). @default {30000} */
  ackWaitMs?: number;
  /** Base of the envelope's backoff after a handler failure. @default {1000} */
  retryBaseMs?: number;
  /** Cap of that backoff. @default {60000} */
  retryMaxMs?: number;
  /**
   * Where a new group's consumers start: new messages only, the whole
   * stream, or a replay from a stream sequence or a time (epoch ms or ISO
   * 8601). A sequence or a time also applies to a subscription without a
   * group. Sequences are those of the topic family's stream.
   * @default {"new"}
   */
  startFrom?: StartFrom;
  /** Messages kept per stream (oldest dropped); 0 = no limit. @default {1000000} */
  maxMsgs?: number;
  /** Stream storage. @default {"file"} */
  storage?: "file" | "memory";
  /** Stream replicas (a clustered server). @default {1} */
  replicas?: number;
  /**
   * JetStream removes a group's consumers after this long without a member
   * (its place in the stream is lost); 0 = never. @default {0}
   */
  groupInactiveMs?: number;
  /** JetStream's duplicate window for `Nats-Msg-Id`. @default {120000} */
  duplicateWindowMs?: number;
  /** Connection name, also the consumer in error histories. @default {"plexus-<random>"} */
  name?: string;
  /**
   * This node's id for request/reply (`request(nodeId, …)` on other nodes
   * reaches it). @default {the connection name}
   */
  nodeId?: string;
  /** Period of request/reply's directory announcements, ms. @default {1000} */
  announceMs?: number;
  /** Longest wait for the first connection and for a JetStream call. @default {5000} */
  connectTimeoutMs?: number;
  /** Warnings for failed handlers and dead letters. */
  log?: Logger;
  /** Counts failed handlers and dead letters. */
  metrics?: MetricsRegistry;
}

/** Where new consumers start (see {@linkcode NatsOptions.startFrom}). */
export type StartFrom =
  | "new"
  | "all"
  | { sequence: number }
  | { time: number | string };

/** The NATS transport, with its connection for health checks and tools. */
export interface NatsTransport extends Transport {
  readonly nc: NatsCore.NatsConnection;
  respond: NatsRequestReply["respond"];
  responders: NatsRequestReply["responders"];
  listResponders: NatsRequestReply["listResponders"];
  request: NatsRequestReply["request"];
  /** Ids of the nodes request/reply knows to be up, this one included, sorted. */
  nodes: NatsRequestReply["nodes"];
}

interface Driver {
  core: typeof NatsCore;
  js: typeof NatsJs;
}

const INSTALL_HINT =
  "the nats transport needs the npm packages @nats-io/transport-node and @nats-io/jetstream (3.x) in the import map: deno add npm:@nats-io/transport-node@3.4.0 npm:@nats-io/jetstream@3.4.0";

/**
 * Imports the NATS client; `load` is for tests. A missing package fails with
 * a `TransportError` carrying the install hint.
 *
 * @example Usage
 * ```ts ignore
 * import { loadNatsDriver } from "./transport.ts";
 * const { core, js } = await loadNatsDriver();
 * ```
 */
export async function loadNatsDriver(
  load: () => Promise<Driver> = async () => ({
    core: await import("@nats-io/transport-node"),
    js: await import("@nats-io/jetstream"),
  }),
): Promise<Driver> {
  try {
    return await load();
  } catch (err) {
    throw new TransportError(
      "unavailable",
      `Cannot load the NATS client: ${INSTALL_HINT} (${
        (err as Error).message
      })`,
      { cause: err },
    );
  }
}

const nanos = (ms: number) => Math.round(ms * 1_000_000);
const DONE: Promise<void> = Promise.resolve();

/** JetStream's deliver policy for `startFrom`. */
function startPolicy(
  from: StartFrom,
  ephemeral: boolean,
): Partial<NatsJs.ConsumerConfig> {
  if (typeof from === "object" && "sequence" in from) {
    return {
      deliver_policy: "by_start_sequence" as NatsJs.DeliverPolicy,
      opt_start_seq: from.sequence,
    };
  }
  if (typeof from === "object") {
    const at = new Date(from.time);
    if (Number.isNaN(at.getTime())) {
      throw new TransportError(
        "invalid_argument",
        `nats startFrom.time '${from.time}' is not a time (epoch ms or ISO 8601)`,
      );
    }
    return {
      deliver_policy: "by_start_time" as NatsJs.DeliverPolicy,
      opt_start_time: at.toISOString(),
    };
  }
  return {
    deliver_policy:
      (!ephemeral && from === "all" ? "all" : "new") as NatsJs.DeliverPolicy,
  };
}
const encoder = new TextEncoder();

/**
 * Connects and returns the transport.
 *
 * @example Usage
 * ```ts ignore
 * import { connectNats } from "./transport.ts";
 * const t = await connectNats({ servers: Deno.env.get("NATS_URL") });
 * await t.subscribe("orders", async (d) => await d.ack(), { group: "billing" });
 * await t.close();
 * ```
 */
export async function connectNats(
  options: NatsOptions = {},
): Promise<NatsTransport> {
  const o = {
    servers: Deno.env.get("NATS_URL") ?? "nats://127.0.0.1:4222",
    mode: "jetstream" as "jetstream" | "core",
    prefix: "plexus.",
    maxMessageBytes: 1_000_000,
    partitions: 8,
    ackWaitMs: 30_000,
    retryBaseMs: 1000,
    retryMaxMs: 60_000,
    startFrom: "new" as StartFrom,
    maxMsgs: 1_000_000,
    storage: "file" as "file" | "memory",
    replicas: 1,
    duplicateWindowMs: 120_000,
    groupInactiveMs: 0,
    name: `plexus-${crypto.randomUUID().slice(0, 8)}`,
    connectTimeoutMs: 5000,
    ...options,
  };
  const { core, js: jsLib } = await loadNatsDriver();
  let nc: NatsCore.NatsConnection;
  try {
    nc = await core.connect({
      servers: o.servers,
      name: o.name,
      timeout: o.connectTimeoutMs,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 100,
      reconnectJitter: 50,
    });
  } catch (err) {
    throw new TransportError(
      "unavailable",
      `Cannot connect to NATS at ${o.servers} within ${o.connectTimeoutMs} ms: ${
        (err as Error).message
      }`,
      { cause: err },
    );
  }
  const maxPayload = nc.info?.max_payload ?? 1024 * 1024;
  if (o.maxMessageBytes + 4096 > maxPayload) {
    await nc.close();
    throw new TransportError(
      "invalid_argument",
      `nats maxMessageBytes ${o.maxMessageBytes} does not fit the server's max_payload ${maxPayload} (4096 bytes are kept for headers)`,
    );
  }
  const report = transportTelemetry("nats", o);
  const caps: TransportCaps = o.mode === "core"
    ? {
      durable: false,
      ordering: "none",
      groups: true,
      maxMessageBytes: o.maxMessageBytes,
      requestReply: true,
    }
    : {
      durable: true,
      ordering: "per-key",
      groups: true,
      maxMessageBytes: o.maxMessageBytes,
      requestReply: true,
    };
  const rr = await natsRequestReply(nc, core, {
    prefix: o.prefix,
    nodeId: o.nodeId ?? o.name,
    announceMs: o.announceMs,
    log: o.log,
  });
  const subs = new Set<Subscription>();
  let closed = false;

  const encode = (topic: string, envelope: Envelope) => {
    if (closed) throw new TransportError("closed", "transport is closed");
    checkTopic(topic);
    const body = encodeBody(envelope);
    if (body.length > o.maxMessageBytes) {
      throw new TransportError(
        "too_large",
        `Cannot publish message '${envelope.id}': it is ${body.length} bytes; the limit is ${o.maxMessageBytes} bytes`,
        { data: { bytes: body.length, limit: o.maxMessageBytes } },
      );
    }
    return body;
  };
  const subjectFor = (topic: string, key?: string) =>
    key === undefined
      ? subjectOf(o.prefix, topic)
      : partitionSubject(o.prefix, topic, partitionOf(key, o.partitions));

  if (o.mode === "core") {
    return coreTransport(nc, core, o, caps, report, encode, subjectFor, rr);
  }

  const js = jsLib.jetstream(nc, { timeout: o.connectTimeoutMs });
  const jsm = await jsLib.jetstreamManager(nc, {
    timeout: o.connectTimeoutMs,
  }).catch(async (err) => {
    await nc.close();
    throw new TransportError(
      "unavailable",
      `NATS at ${o.servers} has no JetStream (start nats-server with -js, or use mode "core"): ${
        (err as Error).message
      }`,
      { cause: err },
    );
  });
  const sp = streamPrefix(o.prefix);
  const dlqStream = `${sp}_DLQ`;
  const errorsStream = `${sp}_ERRORS`;
  const streams = new Map<string, Promise<string>>();

  /** Creates a stream unless it exists (whatever its limits: an operator may have changed them). */
  const ensureStream = (
    name: string,
    subjects: string[],
    extra: Partial<NatsJs.StreamConfig> = {},
  ): Promise<string> => {
    let p = streams.get(name);
    if (!p) {
      p = (async () => {
        const cfg: Partial<NatsJs.StreamConfig> & { name: string } = {
          name,
          subjects,
          retention: jsLib.RetentionPolicy.Limits,
          storage: o.storage === "memory"
            ? jsLib.StorageType.Memory
            : jsLib.StorageType.File,
          num_replicas: o.replicas,
          max_msgs: o.maxMsgs > 0 ? o.maxMsgs : -1,
          discard: jsLib.DiscardPolicy.Old,
          duplicate_window: nanos(o.duplicateWindowMs),
          ...extra,
        };
        try {
          await jsm.streams.add(cfg);
        } catch (err) {
          const info = await jsm.streams.info(name).catch(() => undefined);
          if (!info) throw err;
          const missing = subjects.filter((s) =>
            !info.config.subjects?.includes(s)
          );
          if (missing.length > 0) {
            throw new TransportError(
              "unavailable",
              `nats stream '${name}' exists without the subjects ${
                missing.join(", ")
              }: ${(err as Error).message}`,
              { cause: err },
            );
          }
        }
        return name;
      })();
      p.catch(() => streams.delete(name));
      streams.set(name, p);
    }
    return p;
  };
  const streamFor = (topic: string) =>
    ensureStream(
      streamOf(o.prefix, topic),
      familySubjects(o.prefix, familyOf(topic)),
    );
  const dlqReady = () =>
    ensureStream(dlqStream, [`${o.prefix}_dlq.>`], {
      max_msgs: -1,
      max_msgs_per_subject: 100_000,
    });
  const errorsReady = () =>
    ensureStream(errorsStream, [`${o.prefix}_errors.>`], {
      max_msgs: -1,
      max_msgs_per_subject: 1,
      max_age: nanos(7 * 24 * 3600 * 1000),
    });
  /**
   * Publishes to one of the transport's own streams, making it again once
   * when no stream answers (deleted, or lost with the server's store).
   */
  const publishOwn = async (
    stream: string,
    ready: () => Promise<string>,
    subject: string,
    body: Uint8Array,
    options: Partial<NatsJs.JetStreamPublishOptions> = {},
  ) => {
    await ready();
    try {
      await js.publish(subject, body, options);
    } catch (err) {
      if ((err as Error)?.name !== "JetStreamNotEnabled") throw err;
      streams.delete(stream);
      await ready();
      await js.publish(subject, body, options);
    }
  };

  const unavailable = (what: string, err: unknown) =>
    err instanceof TransportError ? err : new TransportError(
      "unavailable",
      `${what}: ${(err as Error).message}`,
      { cause: err },
    );

  async function publish(
    topic: string,
    envelope: Envelope,
    opts: PublishOptions = {},
  ): Promise<void> {
    const body = encode(topic, envelope);
    const headers = core.headers();
    if (opts.key !== undefined) headers.set(H.key, opts.key);
    const send = async () => {
      await streamFor(topic);
      await js.publish(subjectFor(topic, opts.key), body, {
        msgID: envelope.id,
        headers,
      });
    };
    try {
      await send();
    } catch (err) {
      // No stream answered for the subject: it was deleted (or lost with
      // the server's store) since it was made here. Make it again, once.
      if ((err as Error)?.name !== "JetStreamNotEnabled") {
        throw unavailable(`Cannot publish to '${topic}'`, err);
      }
      streams.delete(streamOf(o.prefix, topic));
      await send().catch((again) => {
        throw unavailable(`Cannot publish to '${topic}'`, again);
      });
    }
  }

  async function history(subject: string): Promise<AttemptError[]> {
    const m = await jsm.streams.getMessage(errorsStream, {
      last_by_subj: subject,
    });
    return m ? m.json<AttemptError[]>() : [];
  }

  async function subscribe(
    topic: string,
    handler: DeliveryHandler,
    opts: SubscribeOptions = {},
  ): Promise<Subscription> {
    if (closed) throw new TransportError("closed", "transport is closed");
    checkTopic(topic);
    const maxInFlight = Math.max(1, opts.maxInFlight ?? 1);
    const ephemeral = opts.group === undefined;
    const base = ephemeral
      ? `e_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`
      : consumerOf(opts.group!, topic);
    let stream: string;
    const specs = [
      { name: `${base}_m`, filter: subjectOf(o.prefix, topic), keyed: false },
      ...Array.from({ length: o.partitions }, (_, n) => ({
        name: `${base}_p${n}`,
        filter: partitionSubject(o.prefix, topic, n),
        keyed: true,
      })),
    ];
    type Spec = typeof specs[number];
    /** Creates a consumer, or adopts the one another member made. */
    const addConsumer = async (s: Spec) => {
      const cfg: Partial<NatsJs.ConsumerConfig> = {
        ...(ephemeral ? { name: s.name, inactive_threshold: nanos(60_000) } : {
          durable_name: s.name,
          ...(o.groupInactiveMs > 0
            ? { inactive_threshold: nanos(o.groupInactiveMs) }
            : {}),
        }),
        ack_policy: jsLib.AckPolicy.Explicit,
        ack_wait: nanos(o.ackWaitMs),
        max_deliver: -1,
        filter_subject: s.filter,
        ...startPolicy(o.startFrom, ephemeral),
        max_ack_pending: s.keyed ? 1 : Math.max(1000, maxInFlight * 4),
      };
      try {
        await jsm.consumers.add(stream, cfg);
      } catch (err) {
        // Made by another member with other settings: keep it, adopt ours where JetStream lets us.
        const info = await jsm.consumers.info(stream, s.name).catch(() =>
          undefined
        );
        if (!info) throw err;
        await jsm.consumers.update(stream, s.name, {
          ack_wait: cfg.ack_wait,
          max_ack_pending: cfg.max_ack_pending,
        }).catch(() => {});
      }
    };
    try {
      stream = await streamFor(topic);
      await Promise.all([dlqReady(), errorsReady()]);
      await Promise.all(specs.map(addConsumer));
    } catch (err) {
      throw unavailable(`Cannot subscribe to '${topic}'`, err);
    }

    let stopped = false;
    let inFlight = 0;
    const waiters: (() => void)[] = [];
    const acquire = (): Promise<void> | undefined => {
      if (inFlight < maxInFlight) {
        inFlight++;
        return undefined;
      }
      return new Promise<void>((r) => waiters.push(r));
    };
    const release = () => {
      const next = waiters.shift();
      if (next) next();
      else inFlight--;
    };
    // Messages being handled; close waits for them.
    let active = 0;
    let idle: (() => void) | undefined;
    const finish = () => {
      release();
      if (--active === 0) idle?.();
    };
    const iterators = new Set<NatsJs.ConsumerMessages>();
    /** Wakes the loops pausing before they make a lost consumer again. */
    const pauses = new Set<() => void>();

    const deadLetter = async (
      m: NatsJs.JsMsg,
      consumer: string,
      reason: string,
      attempts: number,
      errors: AttemptError[],
      messageId: string,
    ) => {
      const headers = core.headers();
      const key = m.headers?.get(H.key);
      if (key) headers.set(H.key, key);
      const data = m.data;
      const truncated = data.length > o.maxMessageBytes;
      const body = truncated ? data.subarray(0, o.maxMessageBytes) : data;
      const fields = deadLetterHeaders({
        topic,
        group: opts.group,
        reason,
        attempts,
        errors,
        deadAt: Date.now(),
        origin: `${stream}:${m.seq}`,
        truncated,
      });
      for (const [k, v] of Object.entries(fields)) headers.set(k, v);
      await publishOwn(dlqStream, dlqReady, dlqSubject(o.prefix, topic), body, {
        headers,
        msgID: `dlq:${stream}:${m.seq}:${consumer}`,
      });
      // No reason: nats-server before 2.10 takes only a bare +TERM.
      m.term();
      if (errors.length > 0) {
        await jsm.streams.purge(errorsStream, {
          filter: errorsSubject(o.prefix, consumer, m.seq),
        });
      }
      report.deadLettered({
        topic,
        messageId,
        reason,
        attempts,
        group: opts.group,
      });
    };

    const errSubjectOf = (d: NatsDelivery) =>
      errorsSubject(o.prefix, d.consumer, d.msg.seq);
    const fail = async (
      d: NatsDelivery,
      delayMs: number | undefined,
      error: string,
    ) => {
      const { attempts, envelope, msg } = d;
      const max = envelope.delivery.maxAttempts;
      const errors = [
        ...(attempts > 1 ? await history(errSubjectOf(d)) : []),
        { at: Date.now(), attempt: attempts, error, consumer: o.name },
      ].slice(-20);
      if (attempts >= max) {
        await deadLetter(
          msg,
          d.consumer,
          `max attempts (${max}) reached`,
          attempts,
          errors,
          envelope.id,
        );
        return;
      }
      await publishOwn(
        errorsStream,
        errorsReady,
        errSubjectOf(d),
        encoder.encode(JSON.stringify(errors)),
      );
      msg.nak(
        delayMs ?? backoffDelay(envelope.delivery.backoff, attempts, {
          baseMs: o.retryBaseMs,
          maxMs: o.retryMaxMs,
        }),
      );
    };

    /** One message and its verbs (a class: no closures per message). */
    class NatsDelivery implements Delivery {
      settled = false;
      readonly topic = topic;
      readonly key: string | undefined;
      constructor(
        readonly envelope: Envelope,
        readonly attempts: number,
        readonly msg: NatsJs.JsMsg,
        readonly consumer: string,
      ) {
        this.key = msg.headers?.get(H.key) || undefined;
      }
      ack(): Promise<void> {
        if (this.settled) return DONE;
        this.settled = true;
        this.msg.ack();
        // A first delivery has no error history to clear.
        if (this.attempts === 1) return DONE;
        return jsm.streams.purge(errorsStream, { filter: errSubjectOf(this) })
          .then(() => {});
      }
      nak(delayMs?: number, error = "nak"): Promise<void> {
        if (this.settled) return DONE;
        this.settled = true;
        return fail(this, delayMs, error);
      }
      inProgress(): Promise<void> {
        if (!this.settled) this.msg.working();
        return DONE;
      }
      async term(reason: string): Promise<void> {
        if (this.settled) return;
        this.settled = true;
        await deadLetter(
          this.msg,
          this.consumer,
          reason,
          this.attempts,
          this.attempts > 1 ? await history(errSubjectOf(this)) : [],
          this.envelope.id,
        );
      }
    }

    const failed = (d: NatsDelivery, err: unknown): Promise<void> | void => {
      report.handlerFailed({
        topic,
        messageId: d.envelope.id,
        attempt: d.attempts,
        error: err,
        group: opts.group,
      });
      if (!d.settled) {
        return d.nak(
          undefined,
          err instanceof Error ? err.message : String(err),
        );
      }
    };
    const settle = (d: NatsDelivery) => d.settled ? undefined : d.ack();

    /** Runs the handler on one message; a promise while it is not done. */
    const dispatch = (
      m: NatsJs.JsMsg,
      consumer: string,
    ): Promise<void> | void => {
      const attempts = m.info.deliveryCount;
      let envelope: Envelope;
      try {
        envelope = decodeBody(
          m.data,
          o.maxMessageBytes,
          `message ${stream}:${m.seq}`,
        );
      } catch (err) {
        return deadLetter(
          m,
          consumer,
          `bad_message: ${(err as Error).message}`,
          attempts,
          [],
          `${stream}:${m.seq}`,
        );
      }
      const max = envelope.delivery.maxAttempts;
      if (attempts > max) {
        // A consumer died holding it (its attempt left no error behind).
        return history(errorsSubject(o.prefix, consumer, m.seq)).then((
          errors,
        ) =>
          deadLetter(
            m,
            consumer,
            `max attempts (${max}) reached`,
            attempts - 1,
            errors,
            envelope.id,
          )
        );
      }
      const d = new NatsDelivery(envelope, attempts, m, consumer);
      let running: unknown;
      try {
        running = handler(d);
      } catch (err) {
        return failed(d, err);
      }
      if (!(running instanceof Promise)) return settle(d);
      return running.then(() => settle(d), (err) => failed(d, err));
    };

    /** Pulls one consumer's messages until closed. */
    const pull = async (spec: Spec) => {
      const consumer = await js.consumers.get(stream, spec.name);
      const msgs = await consumer.consume({
        max_messages: spec.keyed ? 1 : maxInFlight,
        expires: 5000,
        // Ends the pull, and so `loop` makes the consumer again.
        abort_on_missing_resource: true,
      });
      iterators.add(msgs);
      if (stopped) msgs.stop();
      try {
        await handleAll(msgs, spec);
      } finally {
        iterators.delete(msgs);
      }
    };
    const handleAll = async (msgs: NatsJs.ConsumerMessages, spec: Spec) => {
      for await (const m of msgs) {
        const wait = acquire();
        if (wait) await wait;
        if (stopped) {
          release();
          m.nak();
          continue;
        }
        let p: Promise<void> | void;
        try {
          p = dispatch(m, spec.name);
        } catch {
          p = undefined; // JetStream unreachable: redelivered after ackWaitMs
        }
        if (p === undefined) release();
        else {
          active++;
          p.then(finish, finish);
        }
      }
    };
    // A pull that ends before close (the consumer was lost: a server that
    // lost its store, an ephemeral consumer idle past its threshold while
    // disconnected) is made again and resumed.
    const loop = async (spec: Spec) => {
      let failures = 0;
      while (!stopped) {
        try {
          await pull(spec);
          failures = 0;
        } catch {
          failures++;
        }
        if (stopped) break;
        await new Promise<void>((r) => {
          const t = setTimeout(() => {
            pauses.delete(wake);
            r();
          }, Math.min(100 * 2 ** failures, 2000));
          const wake = () => {
            clearTimeout(t);
            r();
          };
          pauses.add(wake);
        });
        if (!stopped) await addConsumer(spec).catch(() => {});
      }
    };
    const loops = Promise.all(specs.map(loop));

    const sub: Subscription = {
      topic,
      group: opts.group,
      async close() {
        if (stopped) return;
        stopped = true;
        subs.delete(sub);
        for (const it of iterators) it.stop();
        for (const wake of pauses) wake();
        for (const w of waiters.splice(0)) w();
        await loops;
        if (active > 0) await new Promise<void>((r) => (idle = r));
        if (ephemeral) {
          await Promise.allSettled(
            specs.map((s) => jsm.consumers.delete(stream, s.name)),
          );
        }
      },
    };
    subs.add(sub);
    return sub;
  }

  return {
    name: "nats",
    caps,
    nc,
    publish,
    subscribe,
    respond: rr.respond,
    responders: rr.responders,
    listResponders: rr.listResponders,
    request: rr.request,
    nodes: rr.nodes,
    async deadLetters(
      topic: string,
      opts: { limit?: number } = {},
    ): Promise<DeadLetter[]> {
      checkTopic(topic);
      await dlqReady();
      const subject = dlqSubject(o.prefix, topic);
      const limit = opts.limit ?? 1000;
      const out: DeadLetter[] = [];
      let seq = 0;
      while (out.length < limit) {
        const m = await jsm.streams.getMessage(dlqStream, {
          seq: seq + 1,
          next_by_subj: subject,
        } as NatsJs.MsgRequest).catch(() => null);
        if (!m) break;
        seq = m.seq;
        out.push(decodeDeadLetter(
          m.data,
          (name) => m.header.get(name) || undefined,
          topic,
          m.time.getTime(),
        ));
      }
      return out;
    },
    async close() {
      if (closed) return;
      closed = true;
      await rr.close();
      await Promise.allSettled([...subs].map((s) => s.close()));
      await nc.drain().catch(() => nc.close());
    },
  };
}

/** The `core` mode: plain NATS subjects and queue groups, at most once. */
function coreTransport(
  nc: NatsCore.NatsConnection,
  core: typeof NatsCore,
  o: Required<Omit<NatsOptions, "log" | "metrics" | "nodeId" | "announceMs">>,
  caps: TransportCaps,
  report: ReturnType<typeof transportTelemetry>,
  encode: (topic: string, envelope: Envelope) => Uint8Array,
  subjectFor: (topic: string, key?: string) => string,
  rr: NatsRequestReply,
): NatsTransport {
  const subs = new Set<Subscription>();
  let closed = false;
  // Publishes of one tick share one PING/PONG: resolved once the server has them.
  let flushing: Promise<void> | undefined;
  const flush = () =>
    flushing ??= Promise.resolve().then(() => {
      flushing = undefined;
      return nc.flush();
    });

  async function subscribe(
    topic: string,
    handler: DeliveryHandler,
    opts: SubscribeOptions = {},
  ): Promise<Subscription> {
    if (closed) throw new TransportError("closed", "transport is closed");
    checkTopic(topic);
    const maxInFlight = Math.max(1, opts.maxInFlight ?? 1);
    let inFlight = 0;
    let stopped = false;
    const queue: { envelope: Envelope; key?: string; attempts: number }[] = [];
    const running = new Set<Promise<void>>();
    const timers = new Set<ReturnType<typeof setTimeout>>();

    const pump = () => {
      while (!stopped && inFlight < maxInFlight && queue.length > 0) {
        const item = queue.shift()!;
        inFlight++;
        const p = run(item).finally(() => {
          running.delete(p);
          inFlight--;
          pump();
        });
        running.add(p);
      }
    };
    const dead = (envelope: Envelope, reason: string, attempts: number) =>
      report.deadLettered({
        topic,
        messageId: envelope.id,
        reason,
        attempts,
        group: opts.group,
      });
    const run = async (
      item: { envelope: Envelope; key?: string; attempts: number },
    ) => {
      const { envelope, attempts } = item;
      const max = envelope.delivery.maxAttempts;
      let settled = false;
      const fail = (delayMs: number | undefined) => {
        if (attempts >= max) {
          dead(envelope, `max attempts (${max}) reached`, attempts);
          return;
        }
        const wait = delayMs ??
          backoffDelay(envelope.delivery.backoff, attempts, {
            baseMs: o.retryBaseMs,
            maxMs: o.retryMaxMs,
          });
        const t = setTimeout(() => {
          timers.delete(t);
          queue.push({ ...item, attempts: attempts + 1 });
          pump();
        }, wait);
        timers.add(t);
      };
      const delivery: Delivery = {
        envelope,
        topic,
        key: item.key,
        attempts,
        get settled() {
          return settled;
        },
        ack() {
          settled = true;
          return Promise.resolve();
        },
        nak(delayMs?: number) {
          if (!settled) {
            settled = true;
            fail(delayMs);
          }
          return Promise.resolve();
        },
        inProgress: () => Promise.resolve(),
        term(reason: string) {
          if (!settled) {
            settled = true;
            dead(envelope, reason, attempts);
          }
          return Promise.resolve();
        },
      };
      try {
        await handler(delivery);
        settled = true;
      } catch (err) {
        if (!settled) {
          report.handlerFailed({
            topic,
            messageId: envelope.id,
            attempt: attempts,
            error: err,
            group: opts.group,
          });
          settled = true;
          fail(undefined);
        }
      }
    };
    const onMessage = (err: Error | null, m: NatsCore.Msg) => {
      if (err || stopped) return;
      try {
        const envelope = decodeBody(
          m.data,
          o.maxMessageBytes,
          `message on ${m.subject}`,
        );
        queue.push({
          envelope,
          key: m.headers?.get(H.key) || undefined,
          attempts: 1,
        });
        pump();
      } catch (e) {
        report.deadLettered({
          topic,
          messageId: m.subject,
          reason: `bad_message: ${(e as Error).message}`,
          attempts: 1,
          group: opts.group,
        });
      }
    };
    const queueOpt = opts.group === undefined ? {} : { queue: opts.group };
    const natsSubs = [
      subjectOf(o.prefix, topic),
      ...Array.from(
        { length: o.partitions },
        (_, n) => partitionSubject(o.prefix, topic, n),
      ),
    ].map((subject) =>
      nc.subscribe(subject, { ...queueOpt, callback: onMessage })
    );
    await nc.flush();
    const sub: Subscription = {
      topic,
      group: opts.group,
      async close() {
        if (stopped) return;
        stopped = true;
        subs.delete(sub);
        for (const s of natsSubs) s.unsubscribe();
        for (const t of timers) clearTimeout(t);
        queue.length = 0;
        await Promise.allSettled([...running]);
      },
    };
    subs.add(sub);
    return sub;
  }

  return {
    name: "nats",
    caps,
    nc,
    async publish(topic, envelope, opts = {}) {
      const body = encode(topic, envelope);
      const headers = core.headers();
      headers.set(H.msgId, envelope.id);
      if (opts.key !== undefined) headers.set(H.key, opts.key);
      try {
        nc.publish(subjectFor(topic, opts.key), body, { headers });
        await flush();
      } catch (err) {
        throw new TransportError(
          "unavailable",
          `Cannot publish to '${topic}': ${(err as Error).message}`,
          { cause: err },
        );
      }
    },
    subscribe,
    respond: rr.respond,
    responders: rr.responders,
    listResponders: rr.listResponders,
    request: rr.request,
    nodes: rr.nodes,
    async close() {
      if (closed) return;
      closed = true;
      await rr.close();
      await Promise.allSettled([...subs].map((s) => s.close()));
      await nc.drain().catch(() => nc.close());
    },
  };
}
