/**
 * Sealed payloads for **agents** (docs/security.md, "Sealed payloads",
 * "Agents as recipients"): agents reach a node through the gateway, not the
 * broker, so a node forwards what is sealed to them. For each
 * `sealed.topics` rule that names `agent:ID` recipients and a `deliver`
 * channel, {@linkcode forwardSealedToAgents} subscribes to the rule's topics
 * on the **inner** (unsealing-free) transport in the consumer group
 * {@linkcode SEALED_FORWARD_GROUP} (so each message is handled by one node
 * of the cluster), checks what it can without a recipient's key (shape,
 * topic, replay window, the sender's batch signature: {@linkcode
 * SealedOpener.verify}) and hands the envelope, still sealed, to the
 * gateway's durable send for every agent among its recipients. The
 * forwarding node never opens it; the agent's SDK does (`sdk/sealed.ts`).
 *
 * The gateway is a plugin and core does not import it: the forwarder asks
 * for a {@linkcode SealedAgentSink} (the `gateway:agents` capability's
 * `send`). It joins the group only once the node has one (the gateway
 * starts after the transports), and not at all on a node that has none
 * after `waitForSinkMs`, so nodes without the gateway leave the work to
 * others; a delivery that finds no sink later (the gateway stopped) is
 * `nak`ed with a delay.
 *
 * @module
 */
import { type Clock, systemClock } from "../clock.ts";
import type { Envelope } from "../envelope.ts";
import type { HealthEntry } from "../plugin.ts";
import type { Logger } from "../observe/logger.ts";
import type { MetricsRegistry } from "../observe/metrics.ts";
import { topicMatches } from "../router.ts";
import type { Subscription, Transport } from "../transport.ts";
import {
  ReplayMemory,
  SealedError,
  type SealedOpener,
  type SealedTopicRule,
  type SealingPolicy,
} from "./sealed_transport.ts";

/**
 * The consumer group forwarding nodes share on sealed topics for agents: a
 * name every transport takes (Kafka's group names allow no dots; this was
 * `plexus.sealed.agents`, which Kafka refused, so nothing was forwarded
 * there).
 */
export const SEALED_FORWARD_GROUP = "plexus-sealed-agents";

/** The message type (`mt`) of a sealed envelope handed to an agent. */
export const SEALED_MESSAGE_TYPE = "plexus.sealed";

/** What the forwarder hands sealed envelopes to: the gateway's `send`. */
export interface SealedAgentSink {
  /** Stores (and pushes) `message` for `agentId` on backend channel `channel`. */
  send(
    agentId: string,
    channel: string,
    message: unknown,
    opts?: {
      messageType?: string;
      priority?: number;
      correlationId?: string;
      sender?: string;
      id?: string;
    },
  ): Promise<{ messageId: string; status: string; error?: string }>;
}

/** Options of {@linkcode forwardSealedToAgents}. */
export interface SealedForwardOptions {
  /** Checks envelopes without opening them (`sealedOpener` with no key). */
  opener: SealedOpener;
  /** The gateway's send, or undefined while this node has none. */
  sink: () => SealedAgentSink | undefined;
  /** Counts forwards and refusals. */
  metrics?: MetricsRegistry;
  /** Refusals (warn) and forwards (debug). */
  log?: Logger;
  /** @default {systemClock} */
  clock?: Clock;
  /** Delay of the `nak` while no gateway is there, ms. @default {5000} */
  noSinkDelayMs?: number;
  /** Delay of the `nak` after a failed send, ms. @default {1000} */
  retryDelayMs?: number;
  /** Message ids (per sender) remembered to refuse replays. @default {100000} */
  maxSeen?: number;
  /** Replay window the seen ids are kept for, ms. @default {300000} */
  replayWindowMs?: number;
  /** How long to wait for a sink before not forwarding at all, ms. @default {30000} */
  waitForSinkMs?: number;
  /** How often to look for the sink meanwhile, ms. @default {200} */
  pollMs?: number;
  /**
   * Deliveries forwarded at once per topic; above 1 an agent may get them
   * out of order. @default {policy.forwardMaxInFlight ?? 1}
   */
  maxInFlight?: number;
}

/** A running forwarder. */
export interface SealedForwarder {
  /**
   * Resolves true once subscribed, false when no sink came within
   * `waitForSinkMs` (or it was closed first); rejects when a subscription
   * failed.
   */
  ready: Promise<boolean>;
  /**
   * The forwarder's `/health` entry: `down` with the reason once a
   * subscription failed (sealed messages for agents then wait on the
   * broker, or go through other nodes), else `up` with what it is doing.
   */
  health(): HealthEntry;
  /** Stops waiting and closes the subscriptions. */
  close(): Promise<void>;
}

/**
 * The rules whose agent recipients are forwarded (those with `deliver`),
 * and the topics forwarders subscribe to for each.
 *
 * @example Usage
 * ```ts
 * import { agentRules } from "./sealed_forward.ts";
 * const rules = agentRules({ topics: [
 *   { pattern: "ops.keys", recipients: ["agent:a1"], deliver: { channel: "sealed" } },
 *   { pattern: "orders.>", recipients: ["node:n1"] },
 * ] });
 * rules.map((r) => r.topics); // [["ops.keys"]]
 * ```
 */
export function agentRules(
  policy: SealingPolicy,
): { rule: SealedTopicRule; topics: string[] }[] {
  return policy.topics
    .filter((r) => r.deliver && r.recipients.some(isAgentRecipient))
    .map((rule) => ({
      rule,
      topics: rule.deliver!.topics?.length
        ? rule.deliver!.topics
        : [rule.pattern],
    }));
}

const isAgentRecipient = (id: string) => id.startsWith("agent:");

/** A refusal that will not change by trying again (the gateway's 4xx). */
const isFinal = (err: unknown) => {
  const status = (err as { status?: unknown })?.status;
  return typeof status === "number" && status >= 400 && status < 500;
};

/**
 * Subscribes `inner` to the topics of every rule with agent recipients and
 * forwards their sealed envelopes, unopened, to the agents through
 * `options.sink()`. A delivery that fails the checks is `term`ed with
 * `"sealed <code>: <detail>"` (dead-lettered) and counted in
 * `plexus_sealed_refused_total{reason}`; each forward is counted in
 * `plexus_sealed_forwarded_total{outcome}` (`forwarded`, `undeliverable`,
 * `retry`, `no_gateway`). Subscribes once `options.sink()` returns a sink
 * (see {@linkcode SealedForwarder.ready}).
 *
 * @example Usage
 * ```ts ignore
 * const forwarder = forwardSealedToAgents(inner, policy, {
 *   opener: sealedOpener({ directory }),
 *   sink: () => kernel.has("gateway:agents") ? kernel.get("gateway:agents") : undefined,
 * });
 * await forwarder.ready; // true: forwarding
 * await forwarder.close();
 * ```
 */
export function forwardSealedToAgents(
  inner: Transport,
  policy: SealingPolicy,
  options: SealedForwardOptions,
): SealedForwarder {
  const clock = options.clock ?? systemClock;
  let closed = false;
  const subs: Subscription[] = [];
  const waker = new AbortController();
  const ready = (async () => {
    const end = clock.mono() + (options.waitForSinkMs ?? 30_000);
    while (!options.sink()) {
      if (closed) return false;
      if (clock.mono() >= end) {
        options.log?.info(
          "no gateway on this node: sealed messages for agents are forwarded by other nodes",
        );
        return false;
      }
      await clock.sleep(options.pollMs ?? 200, waker.signal).catch(() => {});
    }
    if (closed) return false;
    subs.push(...await subscribeAll(inner, policy, options));
    if (closed) await Promise.allSettled(subs.map((s) => s.close()));
    return !closed;
  })();
  let health: HealthEntry = {
    status: "up",
    detail: "waiting for this node's gateway",
  };
  ready.then((subscribed) => {
    health = {
      status: "up",
      detail: subscribed
        ? `forwarding to agents from ${
          agentRules(policy).flatMap((r) => r.topics).join(", ")
        }`
        : "not forwarding: no gateway on this node (other nodes forward)",
    };
  }, (err) => {
    health = {
      status: "down",
      detail: `cannot subscribe to forward sealed messages to agents: ${
        (err as Error).message
      }`,
    };
  });
  return {
    ready,
    health: () => health,
    async close() {
      closed = true;
      waker.abort();
      await ready.catch(() => {});
      await Promise.allSettled(subs.map((s) => s.close()));
    },
  };
}

async function subscribeAll(
  inner: Transport,
  policy: SealingPolicy,
  options: SealedForwardOptions,
): Promise<Subscription[]> {
  const refused = options.metrics?.counter(
    "plexus_sealed_refused_total",
    "Sealed deliveries refused and dead-lettered, by reason",
  );
  const forwarded = options.metrics?.counter(
    "plexus_sealed_forwarded_total",
    "Sealed envelopes handed, unopened, to the gateway for agent recipients",
  );
  const windowMs = options.replayWindowMs ?? policy.replayWindowMs ?? 300_000;
  const maxSeen = options.maxSeen ?? policy.maxSeen ?? 100_000;
  const now = () => (options.clock ?? systemClock).now();
  const seen = new ReplayMemory(maxSeen);
  const remember = (from: string, id: string, timestamp: number) =>
    seen.add(from, id, timestamp + windowMs, now());
  const ruleFor = (topic: string) =>
    policy.topics.find((r) => topicMatches(r.pattern, topic));
  const subs: Subscription[] = [];
  try {
    for (const { rule, topics } of agentRules(policy)) {
      const channel = rule.deliver!.channel;
      for (const topic of topics) {
        subs.push(
          await inner.subscribe(topic, async (d) => {
            // Another rule applies first: not this forwarder's message.
            if (ruleFor(d.topic) !== rule) return await d.ack();
            const env: Envelope = d.envelope;
            let from: string;
            let agents: string[];
            try {
              const check = await options.opener.verify(env, d.topic);
              from = check.from;
              agents = check.recipients.filter(isAgentRecipient).map((r) =>
                r.slice(6)
              );
              if (seen.has(from, env.id)) {
                throw new SealedError(
                  "replay",
                  `message '${env.id}' from '${from}' was already forwarded here`,
                );
              }
            } catch (err) {
              if (!(err instanceof SealedError)) throw err;
              refused?.inc({ reason: err.code });
              options.log?.warn("sealed delivery refused", {
                topic: d.topic,
                id: env.id,
                reason: err.code,
                detail: err.message,
                forwarding: true,
              });
              await d.term(`sealed ${err.code}: ${err.message}`);
              return;
            }
            const sink = options.sink();
            if (!sink) {
              forwarded?.inc({ outcome: "no_gateway" });
              await d.nak(
                options.noSinkDelayMs ?? 5000,
                "no gateway on this node to hand sealed messages for agents to",
              );
              return;
            }
            // Every agent is tried; a store that failed for one is retried
            // for all (agents drop the copies they already have by id).
            const undeliverable: string[] = [];
            let retry: string | undefined;
            for (const agentId of agents) {
              try {
                const result = await sink.send(agentId, channel, env, {
                  // Stable across redeliveries: the agent drops duplicates.
                  id: env.id,
                  messageType: SEALED_MESSAGE_TYPE,
                  priority: env.priority,
                  correlationId: env.correlationId,
                  sender: from,
                });
                if (result.status === "failed") {
                  retry = `sealed message for agent '${agentId}' not stored: ${
                    result.error ?? "failed"
                  }`;
                  continue;
                }
              } catch (err) {
                const message = (err as Error).message;
                if (!isFinal(err)) {
                  retry =
                    `sealed message for agent '${agentId}' not stored: ${message}`;
                  continue;
                }
                // Unknown agent, or one that may not use the channel.
                forwarded?.inc({ outcome: "undeliverable" });
                options.log?.warn("sealed message for an agent undeliverable", {
                  topic: d.topic,
                  id: env.id,
                  agent: agentId,
                  error: message,
                });
                undeliverable.push(
                  `agent '${agentId}' on '${channel}': ${message}`,
                );
                continue;
              }
              forwarded?.inc({ outcome: "forwarded" });
              options.log?.debug("sealed message forwarded unopened", {
                topic: d.topic,
                id: env.id,
                agent: agentId,
                channel,
              });
            }
            if (retry) {
              forwarded?.inc({ outcome: "retry" });
              await d.nak(options.retryDelayMs ?? 1000, retry);
              return;
            }
            if (undeliverable.length > 0) {
              await d.term(`sealed undeliverable: ${undeliverable.join("; ")}`);
              return;
            }
            remember(from, env.id, env.timestamp);
            await d.ack();
          }, {
            group: SEALED_FORWARD_GROUP,
            maxInFlight: options.maxInFlight ?? policy.forwardMaxInFlight ?? 1,
          }),
        );
      }
    }
  } catch (err) {
    await Promise.allSettled(subs.map((s) => s.close()));
    throw err;
  }
  return subs;
}
