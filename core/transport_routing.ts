/**
 * Several transports behind one {@linkcode Transport}: ordered routing rules
 * send each topic to a transport (`orders.>` → kafka, the rest → a default),
 * pick its delivery guarantee, and a bridge moves a topic family from one
 * transport to another without loss (docs/transports.md).
 *
 * - `publish` goes to the transport of the first rule whose pattern matches
 *   the topic, else the default.
 * - `subscribe` subscribes on every transport a topic matching the pattern
 *   could be routed to (rules in order, stopping at the first whose pattern
 *   covers the subscription's; with today's exact-topic transports, one),
 *   and on a bridge's target when one starts.
 * - Deliveries are deduplicated by message id within a window: one already
 *   handled by this subscription is acked without calling the handler, and a
 *   copy arriving while the first is in flight waits for its outcome.
 * - Per topic: `at-most-once` acks before the handler; `at-least-once` acks
 *   after it (the contract's default); `exactly-once` adds a dedup marker in
 *   KV keyed by (group, message id), written atomically with the handler's
 *   own writes when it uses {@linkcode IdempotentDelivery.atomic}, so a
 *   redelivery after a crash between commit and ack is acked unhandled.
 *
 * @example Two transports, one rule
 * ```ts
 * import { routedTransport } from "./transport_routing.ts";
 * import { memoryTransport } from "../testing/memory_transport.ts";
 * const t = routedTransport({
 *   transports: { a: memoryTransport(), b: memoryTransport() },
 *   rules: [{ pattern: "orders.>", transport: "b" }],
 *   default: "a",
 * });
 * t.route("orders.created").transport; // "b"
 * t.route("agents.joined").transport; // "a"
 * await t.close();
 * ```
 *
 * @module
 */
import type { Envelope } from "./envelope.ts";
import { topicMatches, validateTopic } from "./router.ts";
import {
  type Delivery,
  type DeliveryHandler,
  type PublishOptions,
  type SubscribeOptions,
  type Subscription,
  type Transport,
  type TransportCaps,
  TransportError,
} from "./transport.ts";
import { ConfigError } from "./config.ts";
import { transportDoneKey } from "./state/keys.ts";
import { deleteOldest } from "./oldest.ts";

/** A topic's delivery guarantee. */
export type DeliveryGuarantee =
  | "at-most-once"
  | "at-least-once"
  | "exactly-once";

/** The guarantees, weakest first. */
export const DELIVERY_GUARANTEES: readonly DeliveryGuarantee[] = [
  "at-most-once",
  "at-least-once",
  "exactly-once",
];

/** One routing rule: topics matching `pattern` go to `transport`. */
export interface RoutingRule {
  /** A topic pattern (`orders.>`, `agents.*.status`). */
  pattern: string;
  /** The transport's name (`--transport NAME`). */
  transport: string;
  /** The topics' guarantee. @default {"at-least-once"} */
  delivery?: DeliveryGuarantee;
}

/** Where a topic goes. */
export interface Route {
  /** The transport's name. */
  transport: string;
  /** The guarantee its deliveries get. */
  delivery: DeliveryGuarantee;
  /** Index of the rule that matched; -1 for the default. */
  rule: number;
}

/** Options of {@linkcode routedTransport}. */
export interface RoutedTransportOptions {
  /** The transports by name. */
  transports: Record<string, Transport>;
  /** Ordered rules; the first whose pattern matches a topic wins. @default {[]} */
  rules?: RoutingRule[];
  /** Transport of topics no rule matches. @default {the only transport, else none} */
  default?: string;
  /** Guarantee of topics no rule matches. @default {"at-least-once"} */
  defaultDelivery?: DeliveryGuarantee;
  /** The store of exactly-once dedup markers (required by an exactly-once rule). */
  kv?: Deno.Kv;
  /** How long a handled message id is remembered (in memory and in KV). @default {600000} */
  dedupWindowMs?: number;
  /** Ids remembered in memory per subscription. @default {100000} */
  maxSeen?: number;
  /** Called for each duplicate acked without calling the handler. */
  onDuplicate?: (info: { topic: string; id: string; group?: string }) => void;
  /** Close the transports with the facade (off when their plugins close them). @default {true} */
  closeTransports?: boolean;
  /** Called when an at-most-once handler throws (its message is already acked). */
  onDropped?: (info: { topic: string; id: string; error: unknown }) => void;
}

/** What a subscription's handler gets on an exactly-once topic. */
export interface IdempotentDelivery extends Delivery {
  /**
   * An atomic operation on the dedup store that already checks the message
   * is not yet marked done and sets the mark: add the handler's own writes
   * and commit it, and the processing and the mark land together. If the
   * handler does not commit one, the mark is written when it returns.
   */
  atomic(): Deno.AtomicOperation;
}

/** A running bridge (see {@linkcode RoutedTransport.bridge}). */
export interface Bridge {
  /** The topic family moved. */
  readonly family: string;
  /** Where it was. */
  readonly from: string;
  /** Where it goes now. */
  readonly to: string;
  /** The (topic, group) backlogs on `from` being drained. */
  readonly drains: readonly { topic: string; group: string }[];
  /** Messages republished on `to` so far. */
  readonly moved: number;
  /** Stops draining (the family stays routed to `to`). */
  close(): Promise<void>;
}

/** Options of {@linkcode RoutedTransport.bridge}. */
export interface BridgeOptions {
  /** Topics of the family to drain for each of `groups`, besides those of live grouped subscriptions. @default {[]} */
  topics?: string[];
  /** Groups to drain `topics` for. @default {[]} */
  groups?: string[];
}

/** The routing facade: a Transport plus its routing. */
export interface RoutedTransport extends Transport {
  /** The rules in force, bridges' overrides first. */
  readonly rules: readonly RoutingRule[];
  /** Where `topic` goes now. */
  route(topic: string): Route;
  /**
   * Moves the topic family `family` to transport `to`: from now on its
   * publishes go to `to`, live subscriptions on it also subscribe on `to`,
   * and for each (topic, group) of the live grouped subscriptions on it (and
   * `options.topics` × `options.groups`) a bridge consumer joins the group on
   * the old transport, takes its share of the backlog and republishes it on
   * `to` (same envelope and id), acking on the old one only once `to` has it.
   */
  bridge(family: string, to: string, options?: BridgeOptions): Promise<Bridge>;
  /** Running bridges. */
  bridges(): Bridge[];
}

/**
 * Key of the exactly-once dedup mark of message `id` in consumer `group`.
 *
 * @example Usage
 * ```ts
 * import { dedupKey } from "./transport_routing.ts";
 * dedupKey("billing", "m1"); // ["transport-routing", "done", "billing", "m1"]
 * ```
 */
export function dedupKey(group: string, id: string): Deno.KvKey {
  return transportDoneKey(group, id);
}

/**
 * Whether some topic matches both patterns.
 *
 * @example Usage
 * ```ts
 * import { patternsOverlap } from "./transport_routing.ts";
 * patternsOverlap("orders.>", "*.created"); // true
 * patternsOverlap("orders.>", "agents.>"); // false
 * ```
 */
export function patternsOverlap(a: string, b: string): boolean {
  const p = a.split(".");
  const q = b.split(".");
  for (let i = 0;; i++) {
    if (i === p.length || i === q.length) return p.length === q.length;
    if (p[i] === ">" || q[i] === ">") return true;
    if (p[i] !== "*" && q[i] !== "*" && p[i] !== q[i]) return false;
  }
}

/**
 * Whether every topic matching `inner` matches `outer`.
 *
 * @example Usage
 * ```ts
 * import { patternCovers } from "./transport_routing.ts";
 * patternCovers("orders.>", "orders.*.created"); // true
 * patternCovers("orders.*", "orders.>"); // false
 * ```
 */
export function patternCovers(outer: string, inner: string): boolean {
  const p = outer.split(".");
  const q = inner.split(".");
  for (let i = 0;; i++) {
    if (i === p.length || i === q.length) return p.length === q.length;
    if (p[i] === ">") return true;
    if (q[i] === ">") return false;
    if (p[i] !== "*" && p[i] !== q[i]) return false;
  }
}

/** What each guarantee needs from a transport's caps. */
function missingCapability(
  delivery: DeliveryGuarantee,
  caps: TransportCaps,
  hasKv: boolean,
): string | undefined {
  if (delivery === "at-most-once") return undefined;
  if (!caps.durable) return "durable (it declares durable: false)";
  if (delivery === "exactly-once" && !caps.groups) {
    return "groups (it declares groups: false)";
  }
  if (delivery === "exactly-once" && !hasKv) return "a KV dedup store";
  return undefined;
}

/**
 * Checks rules against the transports there are and what each declares;
 * throws a ConfigError naming the rule, the transport and what is missing.
 *
 * @example Usage
 * ```ts
 * import { checkRouting } from "./transport_routing.ts";
 * const caps = { durable: false, ordering: "none", groups: true, maxMessageBytes: 1024 } as const;
 * try {
 *   checkRouting({ rules: [{ pattern: "orders.>", transport: "mesh", delivery: "at-least-once" }] }, { mesh: caps });
 * } catch (err) {
 *   (err as Error).message.includes("durable"); // true
 * }
 * ```
 */
export function checkRouting(
  routing: Pick<
    RoutedTransportOptions,
    "rules" | "default" | "defaultDelivery"
  >,
  caps: Record<string, TransportCaps>,
  options: { hasKv?: boolean } = {},
): void {
  const names = Object.keys(caps);
  const known = names.length ? names.join(", ") : "none";
  // A guarantee left unset is the transport's own and is not checked.
  const check = (
    where: string,
    transport: string,
    delivery: DeliveryGuarantee | undefined,
  ) => {
    const c = caps[transport];
    if (!c) {
      throw new ConfigError(
        `${where}: unknown transport '${transport}' (loaded: ${known})`,
      );
    }
    if (delivery === undefined) return;
    const missing = missingCapability(delivery, c, options.hasKv ?? true);
    if (missing) {
      throw new ConfigError(
        `${where}: delivery '${delivery}' on transport '${transport}' needs ${missing}`,
      );
    }
  };
  (routing.rules ?? []).forEach((r, i) => {
    try {
      validateTopic(r.pattern, true);
    } catch (err) {
      throw new ConfigError(
        `routing.rules[${i}] ('${r.pattern}'): ${(err as Error).message}`,
      );
    }
    check(
      `routing.rules[${i}] ('${r.pattern}' → ${r.transport})`,
      r.transport,
      r.delivery,
    );
  });
  const dflt = routing.default ?? (names.length === 1 ? names[0] : undefined);
  if (dflt !== undefined) {
    check(`routing.default ('${dflt}')`, dflt, routing.defaultDelivery);
  }
}

/**
 * Ids handled recently, oldest first, with when each expires: an expired
 * one is forgotten when asked about, and past `max` the oldest goes.
 */
class SeenIds {
  #ids = new Map<string, number>();
  constructor(readonly windowMs: number, readonly max: number) {}
  has(id: string): boolean {
    const until = this.#ids.get(id);
    if (until === undefined) return false;
    if (until > Date.now()) return true;
    this.#ids.delete(id);
    return false;
  }
  add(id: string): void {
    const now = Date.now();
    this.#ids.delete(id);
    this.#ids.set(id, now + this.windowMs);
    // Not a fresh iterator from the front per id: it walked every hole the
    // deletes left there (~50 µs an id at 100,000; core/oldest.ts).
    if (this.#ids.size > this.max) deleteOldest(this.#ids);
  }
}

interface LiveSubscription {
  pattern: string;
  opts: SubscribeOptions;
  handler: DeliveryHandler;
  on: Map<string, Subscription>;
  closed: boolean;
}

const ORDER = { none: 0, "per-key": 1, total: 2 } as const;

/**
 * Makes the routing facade over `options.transports`. Throws a ConfigError
 * when a rule names an unknown transport or asks a guarantee its transport
 * cannot give ({@linkcode checkRouting}).
 *
 * @example Usage
 * ```ts
 * import { routedTransport } from "./transport_routing.ts";
 * import { memoryTransport } from "../testing/memory_transport.ts";
 * const t = routedTransport({
 *   transports: { fast: memoryTransport() },
 *   rules: [{ pattern: "metrics.>", transport: "fast", delivery: "at-most-once" }],
 * });
 * t.route("metrics.cpu").delivery; // "at-most-once"
 * await t.close();
 * ```
 */
export function routedTransport(
  options: RoutedTransportOptions,
): RoutedTransport {
  const transports = options.transports;
  const names = Object.keys(transports);
  if (names.length === 0) {
    throw new ConfigError("routing: no transports to route to");
  }
  const capsOf = (): Record<string, TransportCaps> =>
    Object.fromEntries(names.map((n) => [n, transports[n].caps]));
  checkRouting(options, capsOf(), { hasKv: options.kv !== undefined });
  const dflt = options.default ?? (names.length === 1 ? names[0] : undefined);
  const defaultDelivery = options.defaultDelivery ?? "at-least-once";
  let rules: RoutingRule[] = [...(options.rules ?? [])];
  const windowMs = options.dedupWindowMs ?? 600_000;
  const maxSeen = options.maxSeen ?? 100_000;
  const live = new Set<LiveSubscription>();
  const running = new Set<Bridge>();
  let closed = false;

  const route = (topic: string): Route => {
    const i = rules.findIndex((r) => topicMatches(r.pattern, topic));
    if (i >= 0) {
      return {
        transport: rules[i].transport,
        delivery: rules[i].delivery ?? "at-least-once",
        rule: i,
      };
    }
    if (dflt === undefined) {
      throw new TransportError(
        "invalid_argument",
        `no routing rule matches topic '${topic}' and there is no default transport`,
        { data: { topic } },
      );
    }
    return { transport: dflt, delivery: defaultDelivery, rule: -1 };
  };

  /** Transports a topic matching `pattern` may be routed to. */
  const reachable = (pattern: string): string[] => {
    const out = new Set<string>();
    for (const r of rules) {
      if (!patternsOverlap(r.pattern, pattern)) continue;
      out.add(r.transport);
      if (patternCovers(r.pattern, pattern)) return [...out];
    }
    if (dflt !== undefined) out.add(dflt);
    return [...out];
  };

  const assertOpen = () => {
    if (closed) {
      throw new TransportError("closed", "the routed transport is closed");
    }
  };

  /** Wraps a handler with dedup and the topic's guarantee. */
  const guarded = (
    handler: DeliveryHandler,
    opts: SubscribeOptions,
  ): DeliveryHandler => {
    const seen = new SeenIds(windowMs, maxSeen);
    // First copy of an id in flight: later copies wait for its outcome.
    const inFlight = new Map<string, Promise<boolean>>();
    const duplicate = async (d: Delivery) => {
      options.onDuplicate?.({
        topic: d.topic,
        id: d.envelope.id,
        ...(opts.group !== undefined ? { group: opts.group } : {}),
      });
      if (!d.settled) await d.ack();
    };
    return async (d) => {
      const id = d.envelope.id;
      if (seen.has(id)) return duplicate(d);
      const first = inFlight.get(id);
      if (first && await first) return duplicate(d);
      let done!: (handled: boolean) => void;
      inFlight.set(id, new Promise<boolean>((r) => (done = r)));
      let handled = false;
      try {
        handled = await handleOnce(d, handler, opts);
      } finally {
        inFlight.delete(id);
        if (handled) seen.add(id);
        done(handled);
      }
    };
  };

  /** Runs one delivery under its guarantee; true when it counts as handled. */
  const handleOnce = async (
    d: Delivery,
    handler: DeliveryHandler,
    opts: SubscribeOptions,
  ): Promise<boolean> => {
    const { delivery } = route(d.topic);
    if (delivery === "at-most-once") {
      await d.ack();
      try {
        await handler(d);
      } catch (error) {
        options.onDropped?.({ topic: d.topic, id: d.envelope.id, error });
      }
      return true;
    }
    let failed = false;
    const view: Delivery = {
      envelope: d.envelope,
      topic: d.topic,
      key: d.key,
      attempts: d.attempts,
      ack: () => d.ack(),
      nak: (delayMs, error) => {
        failed = true;
        return d.nak(delayMs, error);
      },
      inProgress: () => d.inProgress(),
      term: (reason) => {
        failed = true;
        return d.term(reason);
      },
      get settled() {
        return d.settled;
      },
    };
    if (delivery === "at-least-once") {
      await handler(view);
      return !failed;
    }
    return await handleExactlyOnce(d, view, handler, opts.group!);
  };

  const handleExactlyOnce = async (
    d: Delivery,
    view: Delivery,
    handler: DeliveryHandler,
    group: string,
  ): Promise<boolean> => {
    const kv = options.kv!;
    const key = dedupKey(group, d.envelope.id);
    if ((await kv.get(key)).versionstamp !== null) {
      options.onDuplicate?.({ topic: d.topic, id: d.envelope.id, group });
      await d.ack();
      return true;
    }
    const mark = { topic: d.topic, at: 0 };
    let marked = false;
    const markOp = () => {
      mark.at = Date.now();
      return kv.atomic().check({ key, versionstamp: null }).set(key, mark, {
        expireIn: windowMs,
      });
    };
    const settleMarked = async () => {
      if (!marked) {
        const r = await markOp().commit();
        marked = true;
        if (!r.ok) {
          options.onDuplicate?.({ topic: d.topic, id: d.envelope.id, group });
        }
      }
    };
    const idempotent: IdempotentDelivery = Object.assign(
      Object.create(view) as Delivery,
      {
        ack: async () => {
          await settleMarked();
          await d.ack();
        },
        atomic: () => {
          const op = markOp();
          const commit = op.commit.bind(op);
          op.commit = async () => {
            const r = await commit();
            if (r.ok) marked = true;
            return r;
          };
          return op;
        },
      },
    );
    let failed = false;
    const nak = view.nak;
    const term = view.term;
    idempotent.nak = (delayMs, error) => {
      failed = true;
      return nak(delayMs, error);
    };
    idempotent.term = (reason) => {
      failed = true;
      return term(reason);
    };
    await handler(idempotent);
    if (failed) return false;
    await settleMarked();
    if (!d.settled) await d.ack();
    return true;
  };

  const subscribeOn = async (s: LiveSubscription, name: string) => {
    if (s.on.has(name) || s.closed) return;
    const sub = await transports[name].subscribe(
      s.pattern,
      s.handler,
      s.opts,
    );
    if (s.closed) return void await sub.close();
    s.on.set(name, sub);
  };

  const caps: TransportCaps = {
    durable: names.every((n) => transports[n].caps.durable),
    ordering: (["none", "per-key", "total"] as const)[
      Math.min(...names.map((n) => ORDER[transports[n].caps.ordering]))
    ],
    groups: names.every((n) => transports[n].caps.groups),
    maxMessageBytes: Math.min(
      ...names.map((n) => transports[n].caps.maxMessageBytes),
    ),
  };

  const facade: RoutedTransport = {
    name: "routed",
    caps,
    get rules() {
      return rules;
    },
    route,
    async publish(topic: string, envelope: Envelope, opts?: PublishOptions) {
      assertOpen();
      await transports[route(topic).transport].publish(topic, envelope, opts);
    },
    async subscribe(pattern, handler, opts = {}) {
      assertOpen();
      validateTopic(pattern, true);
      const targets = reachable(pattern);
      if (opts.group === undefined) {
        const strict = rules.find((r) =>
          r.delivery === "exactly-once" && patternsOverlap(r.pattern, pattern)
        );
        if (strict || (defaultDelivery === "exactly-once" && dflt)) {
          throw new TransportError(
            "invalid_argument",
            `subscription to '${pattern}' needs a group: ${
              strict ? `rule '${strict.pattern}'` : "the default"
            } is exactly-once, deduplicated per (group, message id)`,
          );
        }
      }
      const s: LiveSubscription = {
        pattern,
        opts,
        handler: guarded(handler, opts),
        on: new Map(),
        closed: false,
      };
      live.add(s);
      try {
        for (const name of targets) await subscribeOn(s, name);
      } catch (err) {
        s.closed = true;
        live.delete(s);
        await Promise.all([...s.on.values()].map((x) => x.close()));
        throw err;
      }
      return {
        topic: pattern,
        group: opts.group,
        async close() {
          if (s.closed) return;
          s.closed = true;
          live.delete(s);
          await Promise.all([...s.on.values()].map((x) => x.close()));
        },
      };
    },
    async bridge(family, to, bridgeOptions = {}) {
      assertOpen();
      validateTopic(family, true);
      if (!(to in transports)) {
        throw new TransportError(
          "invalid_argument",
          `cannot bridge '${family}' to unknown transport '${to}' (loaded: ${
            names.join(", ")
          })`,
        );
      }
      const old = route(representative(family));
      const from = old.transport;
      if (from === to) {
        throw new TransportError(
          "invalid_argument",
          `'${family}' already goes to '${to}'`,
        );
      }
      checkRouting(
        { rules: [{ pattern: family, transport: to, delivery: old.delivery }] },
        capsOf(),
        { hasKv: options.kv !== undefined },
      );
      const overlapping = [...live].filter((s) =>
        patternsOverlap(s.pattern, family)
      );
      // Consumers listen on the new transport before publishes move there.
      for (const s of overlapping) await subscribeOn(s, to);
      rules = [
        { pattern: family, transport: to, delivery: old.delivery },
        ...rules.filter((r) => r.pattern !== family || r.transport !== to),
      ];
      // Transports subscribe to exact topics: drain each (topic, group) a
      // live subscription has, and those the caller names.
      const pairs = new Map<string, [string, string]>();
      for (const s of overlapping) {
        if (s.opts.group !== undefined && topicMatches(family, s.pattern)) {
          pairs.set(`${s.pattern}\n${s.opts.group}`, [s.pattern, s.opts.group]);
        }
      }
      for (const topic of bridgeOptions.topics ?? []) {
        for (const group of bridgeOptions.groups ?? []) {
          pairs.set(`${topic}\n${group}`, [topic, group]);
        }
      }
      let moved = 0;
      const subs: Subscription[] = [];
      const target = transports[to];
      try {
        for (const [topic, group] of pairs.values()) {
          subs.push(
            await transports[from].subscribe(topic, async (d) => {
              await target.publish(
                d.topic,
                d.envelope,
                d.key !== undefined ? { key: d.key } : undefined,
              );
              moved++;
              await d.ack();
            }, { group, maxInFlight: 16 }),
          );
        }
      } catch (err) {
        await Promise.all(subs.map((s) => s.close()));
        throw err;
      }
      const b: Bridge = {
        family,
        from,
        to,
        drains: [...pairs.values()].map(([topic, group]) => ({ topic, group })),
        get moved() {
          return moved;
        },
        async close() {
          running.delete(b);
          await Promise.all(subs.map((s) => s.close()));
        },
      };
      running.add(b);
      return b;
    },
    bridges: () => [...running],
    ...(names.every((n) => transports[n].deadLetters)
      ? {
        deadLetters: (topic: string, opts?: { limit?: number }) =>
          transports[route(topic).transport].deadLetters!(topic, opts),
      }
      : {}),
    async close() {
      if (closed) return;
      closed = true;
      await Promise.all([...running].map((b) => b.close()));
      await Promise.all(
        [...live].flatMap((s) => {
          s.closed = true;
          return [...s.on.values()].map((x) => x.close());
        }),
      );
      live.clear();
      if (options.closeTransports ?? true) {
        await Promise.all(names.map((n) => transports[n].close()));
      }
    },
  };
  return facade;
}

/** A topic the family pattern matches, to find where the family goes now. */
function representative(family: string): string {
  return family.split(".").map((s) => (s === "*" || s === ">" ? "_" : s))
    .join(".");
}
