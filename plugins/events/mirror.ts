/**
 * Mirrors the event store to a durable transport (Kafka, NATS JetStream,
 * Redis Streams, RabbitMQ) when one is loaded, for consumers outside
 * Plexus: each event is published as an `event` envelope on
 * `{prefix}.{type}` with the stream as its key (so per-key ordering keeps a
 * stream in order), its offset in the `x-event-offset` header.
 *
 * One mirror runs in the cluster: the leader's (every node's, without a
 * consensus plugin), through the durable subscriber `mirror:{prefix}`, so a
 * new leader continues from the cursor the old one saved. At least once: an
 * event published just before a leader died is published again; consumers
 * dedupe by envelope id (the event id).
 *
 * @module
 */
import { createEnvelope } from "../../core/envelope.ts";
import type { Transport } from "../../core/transport.ts";
import type { EventBus, EventSubscription } from "./bus.ts";

/** Options for {@linkcode startMirror}. */
export interface MirrorOptions {
  /** Topic prefix. */
  prefix: string;
  /** The durable transport to publish on, or none (now). */
  transport: () => Transport | undefined;
  /** Whether this node should run the mirror now. */
  leads: () => boolean;
  /** How often leadership and the transport are looked at, ms. */
  checkMs: number;
  /** Told when a publish fails (the event is retried). */
  onError?: (err: unknown) => void;
}

/** A running mirror. */
export interface Mirror {
  /** Whether this node mirrors now. */
  readonly active: boolean;
  /** Events published by this node. */
  readonly published: number;
  stop(): Promise<void>;
}

/**
 * Starts looking after the mirror: runs it while this node leads and a
 * durable transport is loaded, stops it otherwise.
 *
 * @example Usage
 * ```ts ignore
 * const mirror = startMirror(bus, { prefix: "events", transport: () => t, leads: () => true, checkMs: 1000 });
 * await mirror.stop();
 * ```
 */
export function startMirror(bus: EventBus, options: MirrorOptions): Mirror {
  let sub: EventSubscription | undefined;
  let starting = false;
  let published = 0;
  let stopped = false;
  const check = async () => {
    if (stopped || starting) return;
    const transport = options.transport();
    const want = options.leads() && transport?.caps.durable === true;
    if (want && !sub) {
      starting = true;
      try {
        sub = await bus.subscribe("", async (e) => {
          const t = options.transport();
          if (!t) throw new Error("the durable transport is gone");
          await t.publish(
            `${options.prefix}.${e.type}`,
            createEnvelope({
              id: e.id,
              type: "event",
              topic: `${options.prefix}.${e.type}`,
              source: e.node,
              timestamp: e.at,
              headers: { "x-event-offset": e.offset },
              payload: e,
              delivery: { guarantee: "at-least-once", persistent: true },
            }),
            { key: e.stream },
          );
          published++;
        }, {
          name: `mirror:${options.prefix}`,
          from: "start",
          onError: (err) => options.onError?.(err),
        });
      } finally {
        starting = false;
      }
    } else if (!want && sub) {
      const s = sub;
      sub = undefined;
      await s.stop();
    }
  };
  const timer = setInterval(
    () => void check().catch(options.onError),
    options.checkMs,
  );
  Deno.unrefTimer(timer);
  void check().catch(options.onError);
  return {
    get active() {
      return sub !== undefined;
    },
    get published() {
      return published;
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      await sub?.stop();
      sub = undefined;
    },
  };
}
