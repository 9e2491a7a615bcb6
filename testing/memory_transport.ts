/**
 * TEST FAKE: an in-memory {@linkcode Transport}, the reference transport of
 * the conformance suite (it passes every case that applies to its caps:
 * not durable, per-key ordering, groups) and a stand-in broker for unit
 * tests of code that publishes or subscribes, or calls services across
 * "nodes" (request/reply: each transport is a node, `nodeId`). One process,
 * nothing survives it. `faults` make it misbehave on purpose so tests can show the suite
 * catches it.
 *
 * @example Two nodes on one broker
 * ```ts
 * import { MemoryBroker, memoryTransport, stopBroker } from "./memory_transport.ts";
 * import { createEnvelope } from "../core/envelope.ts";
 * const broker = new MemoryBroker();
 * const a = memoryTransport({ broker });
 * const b = memoryTransport({ broker });
 * const got = Promise.withResolvers<unknown>();
 * await b.subscribe("greetings", async (d) => {
 *   got.resolve(d.envelope.payload);
 *   await d.ack();
 * }, { group: "g" });
 * await a.publish(
 *   "greetings",
 *   createEnvelope({ type: "event", topic: "greetings", source: "a", payload: "hi" }),
 * );
 * await got.promise; // "hi"
 * await a.close();
 * await b.close();
 * stopBroker(broker);
 * ```
 *
 * @module
 */
import type { Envelope } from "../core/envelope.ts";
import { TimeoutError } from "../core/resilience/errors.ts";
import {
  assertFits,
  type AttemptError,
  backoffDelay,
  type DeadLetter,
  type Delivery,
  type DeliveryHandler,
  type PublishOptions,
  type RequestHandler,
  type RequestOptions,
  type Responder,
  type SubscribeOptions,
  type Subscription,
  type Transport,
  type TransportCaps,
  TransportError,
} from "../core/transport.ts";

/**
 * Deliberate misbehaviour of a {@linkcode memoryTransport}, each breaking
 * one promise of the transport contract.
 */
export interface MemoryFaults {
  /** Deliver every grouped message to two members (or twice to one). */
  doubleDeliverInGroup?: boolean;
  /** Skip the size check. */
  ignoreSizeLimit?: boolean;
  /** Redeliver a nak at once, ignoring its delay. */
  ignoreNakDelay?: boolean;
  /** Drop messages instead of dead-lettering them. */
  dropDeadLetters?: boolean;
  /** Run every delivery at once, ignoring keys. */
  ignoreKeys?: boolean;
  /** Hand responders no headers. */
  dropRequestHeaders?: boolean;
  /** Let a request wait for its answer past its deadline. */
  ignoreRequestTimeout?: boolean;
}

interface Item {
  envelope: Envelope;
  topic: string;
  key?: string;
  attempts: number;
  errors: AttemptError[];
}

interface Member {
  id: string;
  handler: DeliveryHandler;
  maxInFlight: number;
  queue: Item[];
  inFlight: number;
  busyKeys: Set<string>;
  running: Set<Promise<void>>;
  closed: boolean;
}

interface Group {
  name: string;
  members: Member[];
  next: number;
}

interface BrokerState {
  groups: Map<string, Map<string, Group>>;
  dead: Map<string, DeadLetter[]>;
  timers: Set<ReturnType<typeof setTimeout>>;
  /** Request/reply: topic → node id → its responder. */
  responders: Map<string, Map<string, RequestHandler>>;
  nodes: number;
}

const brokers = new WeakMap<MemoryBroker, BrokerState>();

/**
 * The state every fake transport made on it shares (the "broker"): its
 * groups, their queued messages, the dead letters and the retry timers.
 * Transports made on one broker see each other's messages, like nodes on
 * one real broker. Call {@linkcode stopBroker} when done with it.
 */
export class MemoryBroker {
  /** A broker with no topics, groups or dead letters. */
  constructor() {
    brokers.set(this, {
      groups: new Map(),
      dead: new Map(),
      timers: new Set(),
      responders: new Map(),
      nodes: 0,
    });
  }
}

/** Options of {@linkcode memoryTransport}. */
export interface MemoryTransportOptions {
  /** The broker to share with other transports. @default {a new broker} */
  broker?: MemoryBroker;
  /** Largest envelope accepted, in bytes. @default {4096} */
  maxMessageBytes?: number;
  /** Misbehaviour to switch on. @default {{}} */
  faults?: MemoryFaults;
  /** This "node"'s id for request/reply. @default {"mem-N", N counting per broker} */
  nodeId?: string;
}

/**
 * Makes a fake transport (one "node") on `options.broker`, a fresh one by
 * default. Its caps: not durable, per-key ordering, groups, dead letters,
 * request/reply (bodies and answers cross as JSON, as on a wire).
 */
export function memoryTransport(
  options: MemoryTransportOptions = {},
): Transport {
  const broker = brokers.get(options.broker ?? new MemoryBroker())!;
  const faults = options.faults ?? {};
  const caps: TransportCaps = {
    durable: false,
    ordering: "per-key",
    groups: true,
    maxMessageBytes: options.maxMessageBytes ?? 4096,
    requestReply: true,
  };
  const nodeId = options.nodeId ?? `mem-${++broker.nodes}`;
  const answering = new Set<string>();
  const json = (v: unknown) =>
    v === undefined ? v : JSON.parse(JSON.stringify(v));
  const mine = new Set<{ close(): Promise<void> }>();
  let closed = false;
  let counter = 0;

  const route = (group: Group, item: Item) => {
    const live = group.members.filter((m) => !m.closed);
    if (live.length === 0) return;
    let member: Member;
    if (item.key !== undefined && !faults.ignoreKeys) {
      let h = 0;
      for (const c of item.key) h = (h * 31 + c.charCodeAt(0)) >>> 0;
      member = live[h % live.length];
    } else {
      member = live[group.next++ % live.length];
    }
    member.queue.push(item);
    pump(group, member);
  };

  const deadLetter = (item: Item, group: Group, reason: string) => {
    if (faults.dropDeadLetters) return;
    const list = broker.dead.get(item.topic) ?? [];
    list.push({
      envelope: item.envelope,
      topic: item.topic,
      group: group.name,
      reason,
      attempts: item.attempts,
      errors: item.errors,
      deadAt: Date.now(),
    });
    broker.dead.set(item.topic, list);
  };

  const later = (ms: number, fn: () => void) => {
    const id = setTimeout(() => {
      broker.timers.delete(id);
      fn();
    }, ms);
    broker.timers.add(id);
  };

  const pump = (group: Group, member: Member) => {
    while (!member.closed && member.inFlight < member.maxInFlight) {
      const i = member.queue.findIndex((it) =>
        it.key === undefined || faults.ignoreKeys ||
        !member.busyKeys.has(it.key)
      );
      if (i < 0) return;
      const [item] = member.queue.splice(i, 1);
      item.attempts++;
      member.inFlight++;
      if (item.key !== undefined) member.busyKeys.add(item.key);
      const p = run(group, member, item).finally(() => {
        member.inFlight--;
        if (item.key !== undefined) member.busyKeys.delete(item.key);
        member.running.delete(p);
        pump(group, member);
      });
      member.running.add(p);
    }
  };

  const run = async (group: Group, member: Member, item: Item) => {
    let settled = false;
    const fail = (delayMs: number | undefined, error: string) => {
      item.errors.push({
        at: Date.now(),
        attempt: item.attempts,
        error,
        consumer: member.id,
      });
      if (item.attempts >= item.envelope.delivery.maxAttempts) {
        deadLetter(
          item,
          group,
          `max attempts (${item.envelope.delivery.maxAttempts}) reached`,
        );
        return;
      }
      const wait = faults.ignoreNakDelay ? 0 : delayMs ??
        backoffDelay(item.envelope.delivery.backoff, item.attempts, {
          baseMs: 100,
          maxMs: 5000,
        });
      later(wait, () => route(group, item));
    };
    const once = (fn: () => void) => {
      if (settled) return Promise.resolve();
      settled = true;
      fn();
      return Promise.resolve();
    };
    const delivery: Delivery = {
      envelope: item.envelope,
      topic: item.topic,
      key: item.key,
      attempts: item.attempts,
      ack: () => once(() => {}),
      nak: (delayMs, error = "nak") => once(() => fail(delayMs, error)),
      inProgress: () => Promise.resolve(),
      term: (reason) => once(() => deadLetter(item, group, reason)),
      get settled() {
        return settled;
      },
    };
    try {
      await member.handler(delivery);
      await delivery.ack();
    } catch (err) {
      await delivery.nak(
        undefined,
        err instanceof Error ? err.message : String(err),
      );
    }
  };

  return {
    name: "memory",
    caps,
    respond(topic: string, handler: RequestHandler): Promise<Responder> {
      const nodes = broker.responders.get(topic) ?? new Map();
      if (nodes.has(nodeId)) {
        return Promise.reject(
          new TransportError(
            "invalid_argument",
            `Cannot answer '${topic}': node '${nodeId}' answers it already`,
          ),
        );
      }
      nodes.set(nodeId, handler);
      broker.responders.set(topic, nodes);
      answering.add(topic);
      return Promise.resolve({
        topic,
        close() {
          if (nodes.get(nodeId) === handler) nodes.delete(nodeId);
          answering.delete(topic);
          return Promise.resolve();
        },
      });
    },
    responders: (topic: string) =>
      [...broker.responders.get(topic)?.keys() ?? []].sort(),
    listResponders: () =>
      new Map(
        [...broker.responders].filter(([, n]) => n.size > 0).map((
          [t, n],
        ) => [t, [...n.keys()].sort()]),
      ),
    request(node: string, topic: string, body: unknown, o: RequestOptions) {
      const handler = broker.responders.get(topic)?.get(node);
      if (closed || !handler) {
        return Promise.reject(
          new TransportError(
            closed ? "closed" : "unavailable",
            closed
              ? "transport is closed"
              : `node '${node}' does not answer '${topic}'`,
          ),
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const answer: Promise<unknown> = Promise.resolve()
        .then(() =>
          handler(json(body), {
            from: nodeId,
            headers: faults.dropRequestHeaders ? {} : { ...o.headers },
          })
        )
        .then(json, (err) => {
          throw new TransportError(
            "bad_message",
            `responder for '${topic}' on node '${node}' failed: ${
              err instanceof Error ? err.message : String(err)
            }`,
          );
        });
      if (faults.ignoreRequestTimeout) return answer;
      return Promise.race([
        answer,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new TimeoutError(
                  `request '${topic}' to node '${node}'`,
                  o.timeoutMs,
                ),
              ),
            o.timeoutMs,
          );
        }),
      ]).finally(() => clearTimeout(timer));
    },
    publish(topic: string, envelope: Envelope, opts: PublishOptions = {}) {
      if (closed) {
        return Promise.reject(
          new TransportError("closed", "transport is closed"),
        );
      }
      if (!faults.ignoreSizeLimit) {
        try {
          assertFits(envelope, caps.maxMessageBytes);
        } catch (err) {
          return Promise.reject(err);
        }
      }
      for (const group of broker.groups.get(topic)?.values() ?? []) {
        const copies =
          faults.doubleDeliverInGroup && !group.name.startsWith("~") ? 2 : 1;
        for (let i = 0; i < copies; i++) {
          route(group, {
            envelope: structuredClone(envelope),
            topic,
            key: opts.key,
            attempts: 0,
            errors: [],
          });
        }
      }
      return Promise.resolve();
    },
    subscribe(
      topic: string,
      handler: DeliveryHandler,
      opts: SubscribeOptions = {},
    ) {
      const groups = broker.groups.get(topic) ?? new Map<string, Group>();
      broker.groups.set(topic, groups);
      const name = opts.group ?? `~${crypto.randomUUID()}`;
      const group = groups.get(name) ?? { name, members: [], next: 0 };
      groups.set(name, group);
      const member: Member = {
        id: `m${++counter}`,
        handler,
        maxInFlight: opts.maxInFlight ?? 1,
        queue: [],
        inFlight: 0,
        busyKeys: new Set(),
        running: new Set(),
        closed: false,
      };
      group.members.push(member);
      const sub: Subscription = {
        topic,
        group: opts.group,
        async close() {
          member.closed = true;
          mine.delete(sub);
          group.members = group.members.filter((m) => m !== member);
          for (const item of member.queue.splice(0)) route(group, item);
          await Promise.all(member.running);
        },
      };
      mine.add(sub);
      return Promise.resolve(sub);
    },
    deadLetters(topic: string) {
      return Promise.resolve([...(broker.dead.get(topic) ?? [])]);
    },
    async close() {
      closed = true;
      for (const topic of answering) {
        broker.responders.get(topic)?.delete(nodeId);
      }
      answering.clear();
      await Promise.all([...mine].map((s) => s.close()));
      if (options.broker === undefined) {
        for (const id of broker.timers) clearTimeout(id);
      }
    },
  };
}

/**
 * Clears the broker's pending retry timers; call it after closing every
 * transport made on `broker`, so no timer outlives the test.
 */
export function stopBroker(broker: MemoryBroker): void {
  const { timers } = brokers.get(broker)!;
  for (const id of timers) clearTimeout(id);
  timers.clear();
}
