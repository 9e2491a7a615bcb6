/**
 * A {@linkcode Transport} on RabbitMQ (AMQP 0-9-1; npm `rabbitmq-client`
 * 5.0.8, chosen over `amqplib` by measurement on Deno: bench/README.md).
 * Durable, per-key order, groups, dead letters; the layout is in wire.ts and
 * docs/wire-format.md.
 *
 * - Publishing: a topic exchange (keyed messages: a second one, routed to a
 *   partition), persistent messages on a confirm channel: `publish` resolves
 *   once the broker has stored the message in every queue it was routed to.
 * - A group is a durable quorum queue for unkeyed messages (members share it,
 *   `maxInFlight` unacknowledged each) and one quorum queue per key
 *   partition with single active consumer and prefetch 1 (one message of a
 *   partition in flight across the whole group: a key's messages run one at
 *   a time, in order). A subscription without a group gets exclusive,
 *   auto-deleted classic queues of the same shape.
 * - Ack after the handler. Attempts: the failed attempts a retry copy
 *   carries (`Plexus-Attempts`) plus the quorum queue's `x-delivery-count`
 *   (a consumer that died holding the message) plus one.
 * - `nak(delay)` of an unkeyed message publishes a copy (attempts and error
 *   history in headers) to a delay queue whose TTL dead-letters it back to
 *   the group's queue, then acks the original. A keyed message is held for
 *   the delay and requeued (`basic.nack`), so the key keeps its order.
 * - `term`, `maxAttempts` failures and bad messages: a copy with the reason
 *   and history goes to the dead-letter exchange, then the original is acked.
 * - `inProgress` does nothing: RabbitMQ has no per-message redelivery timer;
 *   a delivery stays with its consumer while the channel lives (until the
 *   broker's `consumer_timeout`, 30 min by default, closes it).
 * - The client reconnects on its own; each subscription declares its queues
 *   again and resumes, the publisher's channel is made again.
 *
 * The driver is imported inside {@linkcode connectRabbitmq}; a missing one
 * fails with an install hint.
 *
 * @module
 */
import type * as Rmq from "rabbitmq-client";
import { Buffer } from "node:buffer";
import type { Envelope } from "../../core/envelope.ts";
import type { Logger } from "../../core/observe/logger.ts";
import type { MetricsRegistry } from "../../core/observe/metrics.ts";
import { transportTelemetry } from "../_telemetry.ts";
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
  bindingOf,
  bodyBytes,
  checkTopic,
  deadLetterHeaders,
  decodeBody,
  decodeDeadLetter,
  decodeErrors,
  delayBucket,
  delayExchange,
  delayQueue,
  dlqQueue,
  dlxExchange,
  encodeErrors,
  groupQueue,
  H,
  keyedExchange,
  keyedRoutingKey,
  partitionOf,
  partitionQueue,
  topicOfKeyed,
} from "./wire.ts";

/**
 * Options of {@linkcode connectRabbitmq}.
 *
 * @example Usage
 * ```ts
 * import type { RabbitmqOptions } from "./transport.ts";
 * const options: RabbitmqOptions = { prefix: "plexus", partitions: 4 };
 * ```
 */
export interface RabbitmqOptions {
  /** Broker URL. @default {Deno.env.get("AMQP_URL") ?? "amqp://guest:guest@127.0.0.1:5672"} */
  url?: string;
  /** Prefix of every exchange and queue name. @default {"plexus"} */
  prefix?: string;
  /** Largest `envelopeBytes`. @default {1000000} */
  maxMessageBytes?: number;
  /** Key partitions (queues per group) per topic; equal on every node. @default {4} */
  partitions?: number;
  /** Base of the envelope's backoff after a handler failure. @default {1000} */
  retryBaseMs?: number;
  /** Cap of that backoff. @default {60000} */
  retryMaxMs?: number;
  /**
   * RabbitMQ deletes a group's queues (and what they hold) after this long
   * without a consumer (`x-expires`); 0 = never. @default {0}
   */
  groupExpiresMs?: number;
  /**
   * Type of a group's queues. `classic` (durable, persistent messages)
   * recovers at once after a broker crash; `quorum` (Raft-replicated)
   * counts every delivery exactly (`x-delivery-count`), but on RabbitMQ 3.10
   * a quorum queue made a second before the broker was SIGKILLed did not
   * elect a leader again within a minute of the restart (its publishes and
   * consumes timed out), see docs/wire-format.md. @default {"classic"}
   */
  queueType?: "classic" | "quorum";
  /** Connection name (management UI), also the consumer in error histories. @default {"plexus-<random>"} */
  name?: string;
  /** Longest wait for the first connection and, while reconnecting, for a channel. @default {5000} */
  connectTimeoutMs?: number;
  /** Warnings for failed handlers and dead letters, connection errors at debug. */
  log?: Logger;
  /** Counts failed handlers and dead letters. */
  metrics?: MetricsRegistry;
}

/**
 * The RabbitMQ transport, with its connection for health checks and tools.
 *
 * @example Usage
 * ```ts ignore
 * import { connectRabbitmq } from "./transport.ts";
 * const t = await connectRabbitmq();
 * await t.ping();
 * await t.close();
 * ```
 */
export interface RabbitmqTransport extends Transport {
  /** The client connection (reconnects on its own). */
  readonly connection: Rmq.Connection;
  /** One broker round trip (a passive declare of the topic exchange). */
  ping(): Promise<void>;
}

type Driver = typeof Rmq;

const INSTALL_HINT =
  "the rabbitmq transport needs the npm package rabbitmq-client (5.x) in the import map: deno add npm:rabbitmq-client@5.0.8";

/**
 * Imports the RabbitMQ client; `load` is for tests. A missing package fails
 * with a `TransportError` carrying the install hint.
 *
 * @example Usage
 * ```ts ignore
 * import { loadRabbitmqDriver } from "./transport.ts";
 * const { Connection } = await loadRabbitmqDriver();
 * ```
 */
export async function loadRabbitmqDriver(
  load: () => Promise<Driver> = () => import("rabbitmq-client"),
): Promise<Driver> {
  try {
    return await load();
  } catch (err) {
    throw new TransportError(
      "unavailable",
      `Cannot load the RabbitMQ client: ${INSTALL_HINT} (${
        (err as Error).message
      })`,
      { cause: err },
    );
  }
}

/** The URL with its password hidden, for messages. */
function redact(url: string): string {
  return url.replace(/\/\/([^:/@]*):[^@/]*@/, "//$1:***@");
}

const DONE: Promise<void> = Promise.resolve();

/**
 * Acks (or requeues) `msg` on the channel it came on. A channel that closed
 * meanwhile cannot: the broker has already put the message back.
 */
function settleOn(
  ch: Rmq.Channel,
  msg: Rmq.AsyncMessage,
  how: "ack" | "requeue",
): void {
  if (!ch.active) return;
  try {
    if (how === "ack") ch.basicAck({ deliveryTag: msg.deliveryTag });
    else ch.basicNack({ deliveryTag: msg.deliveryTag, requeue: true });
  } catch { /* closed in between: redelivered */ }
}
/** Delay queues are declared again after this long (they expire an hour after their TTL). */
const REDECLARE_MS = 30 * 60 * 1000;

/**
 * Connects and returns the transport.
 *
 * @example Usage
 * ```ts ignore
 * import { connectRabbitmq } from "./transport.ts";
 * const t = await connectRabbitmq({ url: Deno.env.get("AMQP_URL") });
 * await t.subscribe("orders.*", async (d) => await d.ack(), { group: "billing" });
 * await t.close();
 * ```
 */
export async function connectRabbitmq(
  options: RabbitmqOptions = {},
): Promise<RabbitmqTransport> {
  const o = {
    url: Deno.env.get("AMQP_URL") ?? "amqp://guest:guest@127.0.0.1:5672",
    prefix: "plexus",
    maxMessageBytes: 1_000_000,
    partitions: 4,
    retryBaseMs: 1000,
    retryMaxMs: 60_000,
    groupExpiresMs: 0,
    queueType: "classic" as "classic" | "quorum",
    name: `plexus-${crypto.randomUUID().slice(0, 8)}`,
    connectTimeoutMs: 5000,
    ...options,
  };
  const { Connection } = await loadRabbitmqDriver();
  const rabbit = new Connection({
    url: o.url,
    connectionName: o.name,
    connectionTimeout: o.connectTimeoutMs,
    acquireTimeout: o.connectTimeoutMs,
    retryLow: 100,
    retryHigh: 2000,
    // Error histories travel in headers; a header frame must fit one frame.
    frameMax: 131_072,
    noDelay: true,
  });
  rabbit.on("error", (err) =>
    o.log?.debug("rabbitmq connection error", {
      error: (err as Error)?.message,
    }));
  try {
    await rabbit.onConnect(o.connectTimeoutMs);
  } catch (err) {
    rabbit.unsafeDestroy();
    throw new TransportError(
      "unavailable",
      `Cannot connect to RabbitMQ at ${
        redact(o.url)
      } within ${o.connectTimeoutMs} ms: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const report = transportTelemetry("rabbitmq", o);
  const caps: TransportCaps = {
    durable: true,
    ordering: "per-key",
    groups: true,
    maxMessageBytes: o.maxMessageBytes,
  };
  const mainEx = o.prefix;
  const keyedEx = keyedExchange(o.prefix);
  const dlx = dlxExchange(o.prefix);
  const delayEx = delayExchange(o.prefix);
  const exchanges = [
    { exchange: mainEx, type: "topic", durable: true },
    { exchange: keyedEx, type: "topic", durable: true },
    { exchange: dlx, type: "direct", durable: true },
    { exchange: delayEx, type: "headers", durable: true },
  ];
  const declareExchanges = async () => {
    for (const e of exchanges) await rabbit.exchangeDeclare(e);
  };
  try {
    await declareExchanges();
  } catch (err) {
    rabbit.unsafeDestroy();
    throw new TransportError(
      "unavailable",
      `Cannot declare the rabbitmq exchanges '${mainEx}*': ${
        (err as Error).message
      }`,
      { cause: err },
    );
  }
  const pub = rabbit.createPublisher({ confirm: true, exchanges });
  const subs = new Set<Subscription>();
  let closed = false;

  const unavailable = (what: string, err: unknown) =>
    err instanceof TransportError ? err : new TransportError(
      "unavailable",
      `${what}: ${(err as Error)?.message ?? err}`,
      { cause: err },
    );

  /** Declares the dead-letter queue of `topic` (every time: it may have been deleted). */
  const ensureDlq = async (topic: string) => {
    const queue = dlqQueue(o.prefix, topic);
    await rabbit.queueDeclare({ queue, durable: true });
    await rabbit.queueBind({ queue, exchange: dlx, routingKey: topic });
    return queue;
  };
  const delays = new Map<number, number>();
  const ensureDelay = async (ms: number) => {
    const at = delays.get(ms);
    if (at !== undefined && Date.now() - at < REDECLARE_MS) return;
    const queue = delayQueue(o.prefix, ms);
    await rabbit.queueDeclare({
      queue,
      durable: true,
      arguments: {
        "x-queue-type": "quorum",
        "x-message-ttl": ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-expires": ms + 3_600_000,
      },
    });
    await rabbit.queueBind({
      queue,
      exchange: delayEx,
      routingKey: "",
      arguments: { "x-match": "all", [H.delay]: String(ms) },
    });
    delays.set(ms, Date.now());
  };

  async function publish(
    topic: string,
    envelope: Envelope,
    opts: PublishOptions = {},
  ): Promise<void> {
    if (closed) throw new TransportError("closed", "transport is closed");
    checkTopic(topic);
    const body = Buffer.from(JSON.stringify(envelope));
    if (body.length > o.maxMessageBytes) {
      throw new TransportError(
        "too_large",
        `Cannot publish message '${envelope.id}': it is ${body.length} bytes; the limit is ${o.maxMessageBytes} bytes`,
        { data: { bytes: body.length, limit: o.maxMessageBytes } },
      );
    }
    try {
      await pub.send(
        opts.key === undefined
          ? {
            exchange: mainEx,
            routingKey: topic,
            durable: true,
            messageId: envelope.id,
          }
          : {
            exchange: keyedEx,
            routingKey: keyedRoutingKey(
              topic,
              partitionOf(opts.key, o.partitions),
            ),
            durable: true,
            messageId: envelope.id,
            headers: { [H.key]: opts.key },
          },
        body,
      );
    } catch (err) {
      throw unavailable(`Cannot publish to '${topic}'`, err);
    }
  }

  async function subscribe(
    topic: string,
    handler: DeliveryHandler,
    opts: SubscribeOptions = {},
  ): Promise<Subscription> {
    if (closed) throw new TransportError("closed", "transport is closed");
    checkTopic(topic, true);
    const maxInFlight = Math.max(1, opts.maxInFlight ?? 1);
    const group = opts.group;
    const durable = group !== undefined;
    const quorum = durable && o.queueType === "quorum";
    const main = durable
      ? groupQueue(o.prefix, group, topic)
      : `${o.prefix}.e.${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
    const binding = bindingOf(topic);
    const queues = [
      { name: main, keyed: false, exchange: mainEx, routingKey: binding },
      ...Array.from({ length: o.partitions }, (_, n) => ({
        name: partitionQueue(main, n),
        keyed: true,
        exchange: keyedEx,
        routingKey: keyedRoutingKey(binding, n),
      })),
    ];
    type Queue = typeof queues[number];
    const declare = async (q: Queue) => {
      const args: Record<string, unknown> = durable
        ? {
          ...(q.keyed ? { "x-single-active-consumer": true } : {}),
          ...(quorum ? { "x-queue-type": "quorum" } : {}),
          ...(o.groupExpiresMs > 0 ? { "x-expires": o.groupExpiresMs } : {}),
        }
        : {};
      try {
        await rabbit.queueDeclare({
          queue: q.name,
          durable,
          exclusive: !durable,
          autoDelete: !durable,
          arguments: args,
        });
      } catch (err) {
        // Made by an operator or another version with other arguments: used as it is.
        if ((err as Rmq.AMQPError)?.code !== "PRECONDITION_FAILED") throw err;
        await rabbit.queueDeclare({ queue: q.name, passive: true });
      }
      await rabbit.queueBind({
        queue: q.name,
        exchange: q.exchange,
        routingKey: q.routingKey,
      });
    };

    let stopped = false;
    let channel: Rmq.Channel | undefined;
    const tags: string[] = [];
    // Deliveries being handled (or held for a keyed nak); close waits for them.
    let active = 0;
    let idle: (() => void) | undefined;
    const finish = () => {
      if (--active === 0) idle?.();
    };
    const holds = new Map<ReturnType<typeof setTimeout>, () => void>();
    /** Error histories of keyed messages being retried in place, by queue and message id. */
    const histories = new Map<string, AttemptError[]>();

    const deadLetter = async (
      d: {
        ch: Rmq.Channel;
        msg: Rmq.AsyncMessage;
        queue: string;
        topic: string;
        key?: string;
      },
      reason: string,
      attempts: number,
      errors: AttemptError[],
      messageId: string,
    ) => {
      const data = bodyBytes(d.msg.body);
      const truncated = data.length > o.maxMessageBytes;
      const headers: Record<string, string> = deadLetterHeaders({
        topic: d.topic,
        group,
        reason,
        attempts,
        errors,
        deadAt: Date.now(),
        origin: d.queue,
        truncated,
      });
      if (d.key !== undefined) headers[H.key] = d.key;
      await ensureDlq(topic);
      await pub.send(
        {
          exchange: dlx,
          routingKey: topic,
          durable: true,
          messageId: d.msg.messageId,
          headers,
        },
        Buffer.from(truncated ? data.subarray(0, o.maxMessageBytes) : data),
      );
      settleOn(d.ch, d.msg, "ack");
      histories.delete(`${d.queue}\n${d.msg.messageId}`);
      report.deadLettered({
        topic: d.topic,
        messageId,
        reason,
        attempts,
        group,
      });
    };

    /** One message and its verbs (a class: no closures per message). */
    class RabbitDelivery implements Delivery {
      settled = false;
      constructor(
        readonly envelope: Envelope,
        readonly topic: string,
        readonly key: string | undefined,
        readonly attempts: number,
        readonly errors: AttemptError[],
        readonly ch: Rmq.Channel,
        readonly msg: Rmq.AsyncMessage,
        readonly queue: string,
        readonly keyed: boolean,
      ) {}
      ack(): Promise<void> {
        if (this.settled) return DONE;
        this.settled = true;
        if (this.attempts > 1) {
          histories.delete(`${this.queue}\n${this.msg.messageId}`);
        }
        settleOn(this.ch, this.msg, "ack");
        return DONE;
      }
      nak(delayMs?: number, error = "nak"): Promise<void> {
        if (this.settled) return DONE;
        this.settled = true;
        return fail(this, delayMs, error);
      }
      inProgress(): Promise<void> {
        return DONE;
      }
      term(reason: string): Promise<void> {
        if (this.settled) return DONE;
        this.settled = true;
        return deadLetter(
          this,
          reason,
          this.attempts,
          this.errors,
          this.envelope.id,
        );
      }
    }

    const fail = async (
      d: RabbitDelivery,
      delayMs: number | undefined,
      error: string,
    ) => {
      const { attempts, envelope } = d;
      const max = envelope.delivery.maxAttempts;
      const errors = [
        ...d.errors,
        { at: Date.now(), attempt: attempts, error, consumer: o.name },
      ].slice(-20);
      if (attempts >= max) {
        await deadLetter(
          d,
          `max attempts (${max}) reached`,
          attempts,
          errors,
          envelope.id,
        );
        return;
      }
      const wait = delayMs ??
        backoffDelay(envelope.delivery.backoff, attempts, {
          baseMs: o.retryBaseMs,
          maxMs: o.retryMaxMs,
        });
      if (d.keyed) {
        // Held in place so the key's later messages wait for it.
        histories.set(`${d.queue}\n${d.msg.messageId}`, errors);
        await new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            holds.delete(t);
            resolve();
          }, wait);
          holds.set(t, resolve);
        });
        if (!stopped) {
          settleOn(d.ch, d.msg, "requeue");
        }
        return;
      }
      const headers: Record<string, string | number> = {
        [H.topic]: d.topic,
        [H.attempts]: attempts,
        [H.errors]: encodeErrors(errors),
      };
      if (d.key !== undefined) headers[H.key] = d.key;
      const bucket = delayBucket(wait);
      if (bucket > 0) {
        await ensureDelay(bucket);
        headers[H.delay] = String(bucket);
      }
      await pub.send(
        {
          exchange: bucket > 0 ? delayEx : "",
          routingKey: d.queue,
          durable: true,
          messageId: d.msg.messageId,
          headers,
        },
        Buffer.from(bodyBytes(d.msg.body)),
      );
      settleOn(d.ch, d.msg, "ack");
    };

    const failed = (d: RabbitDelivery, err: unknown) => {
      report.handlerFailed({
        topic: d.topic,
        messageId: d.envelope.id,
        attempt: d.attempts,
        error: err,
        group,
      });
      if (!d.settled) {
        return d.nak(
          undefined,
          err instanceof Error ? err.message : String(err),
        );
      }
    };
    const settle = (d: RabbitDelivery) => d.settled ? undefined : d.ack();

    /** Runs the handler on one message; a promise while it is not done. */
    const dispatch = (
      ch: Rmq.Channel,
      msg: Rmq.AsyncMessage,
      q: Queue,
    ): Promise<void> | void => {
      const headers = msg.headers ?? {};
      const key = typeof headers[H.key] === "string"
        ? headers[H.key] as string
        : undefined;
      const msgTopic = typeof headers[H.topic] === "string"
        ? headers[H.topic] as string
        : msg.exchange === keyedEx
        ? topicOfKeyed(msg.routingKey)
        : msg.exchange === mainEx
        ? msg.routingKey
        : topic;
      const ref = { ch, msg, queue: q.name, topic: msgTopic, key };
      let envelope: Envelope;
      try {
        envelope = decodeBody(
          bodyBytes(msg.body),
          o.maxMessageBytes,
          `message ${msg.messageId ?? "(no message_id)"} in queue ${q.name}`,
        );
      } catch (err) {
        return deadLetter(
          ref,
          `bad_message: ${(err as Error).message}`,
          1,
          [],
          msg.messageId ?? `${q.name}:${msg.deliveryTag}`,
        );
      }
      // Quorum queues count deliveries; a classic queue (a partition, or a
      // subscription without a group) only says "redelivered", and a keyed
      // message retried in place has its failures here.
      const count = headers["x-delivery-count"];
      const held = msg.redelivered
        ? histories.get(`${q.name}\n${msg.messageId}`)
        : undefined;
      const redeliveries = held
        ? held.length
        : quorum
        ? (typeof count === "number" ? count : 0)
        : (msg.redelivered ? 1 : 0);
      const attempts = (Number(headers[H.attempts]) || 0) + redeliveries + 1;
      const errors = held ?? decodeErrors(headers[H.errors]);
      const max = envelope.delivery.maxAttempts;
      if (attempts > max) {
        // A consumer died holding it (its attempt left no error behind).
        return deadLetter(
          ref,
          `max attempts (${max}) reached`,
          attempts - 1,
          errors,
          envelope.id,
        );
      }
      const d = new RabbitDelivery(
        envelope,
        msgTopic,
        key,
        attempts,
        errors,
        ch,
        msg,
        q.name,
        q.keyed,
      );
      let running: unknown;
      try {
        running = handler(d);
      } catch (err) {
        return failed(d, err);
      }
      if (!(running instanceof Promise)) return settle(d);
      return running.then(() => settle(d), (err) => failed(d, err));
    };

    const onMessage = (ch: Rmq.Channel, q: Queue, msg: Rmq.AsyncMessage) => {
      if (stopped) return; // requeued when the channel closes
      let p: Promise<void> | void;
      try {
        p = dispatch(ch, msg, q);
      } catch {
        p = undefined; // the channel is gone: the broker redelivers
      }
      if (p === undefined) return;
      active++;
      p.catch(() => {/* the broker is unreachable: redelivered */}).then(
        finish,
      );
    };

    /** Declares the queues and starts consuming; resolves with the channel's end. */
    const setup = async (): Promise<{ ended: Promise<void> }> => {
      await declareExchanges();
      for (const q of queues) await declare(q);
      await ensureDlq(topic);
      const ch = await rabbit.acquire();
      channel = ch;
      const ended = new Promise<void>((r) => ch.once("close", () => r()));
      // The queue was deleted: the channel is made again, the queue with it.
      ch.on("basic.cancel", () => ch.close().catch(() => {}));
      tags.length = 0;
      try {
        await ch.basicQos({ prefetchCount: 1 });
        for (const q of queues.slice(1)) {
          const { consumerTag } = await ch.basicConsume(
            { queue: q.name },
            (m) => onMessage(ch, q, m),
          );
          tags.push(consumerTag);
        }
        await ch.basicQos({ prefetchCount: maxInFlight });
        const { consumerTag } = await ch.basicConsume(
          { queue: main },
          (m) => onMessage(ch, queues[0], m),
        );
        tags.push(consumerTag);
      } catch (err) {
        await ch.close().catch(() => {});
        throw err;
      }
      return { ended };
    };
    let wake: (() => void) | undefined;
    const first = Promise.withResolvers<void>();
    let started = false;
    const loop = async () => {
      let failures = 0;
      while (!stopped) {
        let ended: Promise<void> | undefined;
        try {
          ({ ended } = await setup());
          failures = 0;
          // Closed while the channel was being made: close() missed it.
          if (stopped) await channel?.close().catch(() => {});
          if (!started) {
            started = true;
            first.resolve();
          }
        } catch (err) {
          if (!started) {
            first.reject(err);
            return;
          }
          // The connection was closed for good: nothing to come back to.
          if ((err as Rmq.AMQPError)?.code === "CLOSING") break;
          failures++;
          o.log?.debug("rabbitmq subscription setup failed", {
            topic,
            error: (err as Error)?.message,
          });
        }
        if (ended) await ended;
        // Handlers of the closed channel cannot ack there: the broker redelivers.
        histories.clear();
        if (stopped) break;
        await new Promise<void>((r) => {
          const t = setTimeout(() => {
            wake = undefined;
            r();
          }, Math.min(100 * 2 ** failures, 2000));
          wake = () => {
            clearTimeout(t);
            r();
          };
        });
      }
    };
    const looping = loop();
    try {
      await first.promise;
    } catch (err) {
      stopped = true;
      throw unavailable(`Cannot subscribe to '${topic}'`, err);
    }

    const sub: Subscription = {
      topic,
      group,
      async close() {
        if (stopped) return;
        stopped = true;
        subs.delete(sub);
        wake?.();
        const ch = channel;
        if (ch?.active) {
          await Promise.allSettled(
            tags.map((consumerTag) => ch.basicCancel({ consumerTag })),
          );
        }
        for (const [t, resolve] of holds) {
          clearTimeout(t);
          resolve();
        }
        holds.clear();
        if (active > 0) await new Promise<void>((r) => (idle = r));
        await ch?.close().catch(() => {});
        await looping;
      },
    };
    subs.add(sub);
    return sub;
  }

  /** Dead-letter reads of this transport, one at a time (a read holds the messages it has seen). */
  let reading: Promise<unknown> = DONE;

  return {
    name: "rabbitmq",
    caps,
    connection: rabbit,
    publish,
    subscribe,
    async ping() {
      await rabbit.exchangeDeclare({ exchange: mainEx, passive: true });
    },
    deadLetters(
      topic: string,
      opts: { limit?: number } = {},
    ): Promise<DeadLetter[]> {
      checkTopic(topic, true);
      const limit = opts.limit ?? 1000;
      const read = async () => {
        const queue = await ensureDlq(topic);
        const ch = await rabbit.acquire();
        try {
          const out: DeadLetter[] = [];
          while (out.length < limit) {
            const m = await ch.basicGet({ queue });
            if (!m) break;
            out.push(
              decodeDeadLetter(bodyBytes(m.body), m.headers ?? {}, topic),
            );
          }
          return out;
        } finally {
          // Closing the channel puts every message read back, in order.
          await ch.close().catch(() => {});
        }
      };
      const p = reading.then(read, read);
      reading = p.catch(() => {});
      return p;
    },
    async close() {
      if (closed) return;
      closed = true;
      await Promise.allSettled([...subs].map((s) => s.close()));
      await pub.close().catch(() => {});
      await rabbit.close().catch(() => rabbit.unsafeDestroy());
    },
  };
}
