/**
 * Gossip timing and Lifeguard settings, with defaults close to
 * memberlist's LAN profile.
 *
 * @module
 */

/** How a member picks whom to probe each protocol period. */
export type ProbeMode = "round-robin" | "random";

/** Every tunable of the SWIM + Lifeguard core; all durations in ms. */
export interface GossipConfig {
  /** Protocol period T′: one probe per member per period. @default {1000} */
  probeIntervalMs: number;
  /** Wait for a direct ack before asking for indirect probes. @default {500} */
  probeTimeoutMs: number;
  /** Members asked to probe indirectly (k). @default {3} */
  indirectChecks: number;
  /**
   * Suspicion timeout = mult · max(1, log10 n) · probe interval; also sets
   * the confirmations Lifeguard expects (mult − 2). @default {4}
   */
  suspicionMult: number;
  /** Lifeguard: a fresh suspicion waits this many times the minimum timeout. @default {6} */
  suspicionMaxTimeoutMult: number;
  /** Gossip round period. @default {200} */
  gossipIntervalMs: number;
  /** Members sent queued broadcasts each gossip round. @default {3} */
  gossipNodes: number;
  /** Each broadcast is sent mult · ceil(log10(n + 1)) times. @default {4} */
  retransmitMult: number;
  /** Lifeguard: probe interval and timeout scale up to this factor. @default {8} */
  awarenessMaxMultiplier: number;
  /** Full-state push/pull exchange period (scaled up above 32 members). @default {30000} */
  pushPullIntervalMs: number;
  /** Dead members are still gossiped to, then forgotten, after this. @default {30000} */
  gossipToTheDeadMs: number;
  /**
   * A dead member's id may be taken by a new address after this; 0 means
   * never. @default {0}
   */
  deadNodeReclaimMs: number;
  /** Byte budget of one datagram, piggybacked broadcasts included. @default {1400} */
  maxPacketBytes: number;
  /**
   * `round-robin` (memberlist: a shuffled list, walked in order) or
   * `random` (the SWIM paper: a uniform random target each period).
   * @default {"round-robin"}
   */
  probeMode: ProbeMode;
  /** Lifeguard local health awareness (scaled timeouts, nacks). @default {true} */
  awareness: boolean;
  /** Lifeguard suspicion that starts long and decays with confirmations. @default {true} */
  suspicionDecay: boolean;
  /** Lifeguard buddy system: a ping to a suspect carries the suspicion. @default {true} */
  buddy: boolean;
  /**
   * Answer a suspect or dead notice about an already-refuted incarnation
   * with the current alive notice, sent straight back to the sender (not in
   * SWIM or Lifeguard; it stops a member that missed a refutation from
   * declaring a healthy member dead). @default {true}
   */
  answerStaleNotices: boolean;
  /** Start the periodic timers at a random offset within their period. @default {true} */
  staggerStart: boolean;
}

/** memberlist's LAN profile, with all of Lifeguard on. */
export const DEFAULT_GOSSIP_CONFIG: Readonly<GossipConfig> = Object.freeze({
  probeIntervalMs: 1000,
  probeTimeoutMs: 500,
  indirectChecks: 3,
  suspicionMult: 4,
  suspicionMaxTimeoutMult: 6,
  gossipIntervalMs: 200,
  gossipNodes: 3,
  retransmitMult: 4,
  awarenessMaxMultiplier: 8,
  pushPullIntervalMs: 30_000,
  gossipToTheDeadMs: 30_000,
  deadNodeReclaimMs: 0,
  maxPacketBytes: 1400,
  probeMode: "round-robin",
  awareness: true,
  suspicionDecay: true,
  buddy: true,
  answerStaleNotices: true,
  staggerStart: true,
});

/**
 * The three Lifeguard extensions and the stale-notice answer off: the plain
 * SWIM of the 2002 paper.
 */
export const PLAIN_SWIM: Readonly<Partial<GossipConfig>> = Object.freeze({
  awareness: false,
  suspicionDecay: false,
  buddy: false,
  answerStaleNotices: false,
});

/**
 * Fills in defaults and checks every field, throwing a `RangeError` that
 * names the field and the value seen.
 *
 * @example Usage
 * ```ts
 * import { gossipConfig } from "./config.ts";
 * const c = gossipConfig({ probeIntervalMs: 500, probeTimeoutMs: 200 });
 * c.gossipNodes; // 3
 * ```
 */
export function gossipConfig(
  options: Partial<GossipConfig> = {},
): GossipConfig {
  const c: GossipConfig = { ...DEFAULT_GOSSIP_CONFIG, ...options };
  const positive: (keyof GossipConfig)[] = [
    "probeIntervalMs",
    "probeTimeoutMs",
    "suspicionMult",
    "suspicionMaxTimeoutMult",
    "gossipIntervalMs",
    "gossipNodes",
    "retransmitMult",
    "awarenessMaxMultiplier",
    "pushPullIntervalMs",
    "maxPacketBytes",
  ];
  for (const key of positive) {
    const v = c[key];
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      throw new RangeError(
        `Invalid gossip config: ${key} must be a positive number, got ${v}`,
      );
    }
  }
  for (
    const key of [
      "indirectChecks",
      "gossipToTheDeadMs",
      "deadNodeReclaimMs",
    ] as const
  ) {
    const v = c[key];
    if (!Number.isFinite(v) || v < 0) {
      throw new RangeError(
        `Invalid gossip config: ${key} must be a number >= 0, got ${v}`,
      );
    }
  }
  if (c.probeTimeoutMs >= c.probeIntervalMs) {
    throw new RangeError(
      `Invalid gossip config: probeTimeoutMs (${c.probeTimeoutMs}) must be below probeIntervalMs (${c.probeIntervalMs})`,
    );
  }
  if (c.suspicionMaxTimeoutMult < 1) {
    throw new RangeError(
      `Invalid gossip config: suspicionMaxTimeoutMult must be >= 1, got ${c.suspicionMaxTimeoutMult}`,
    );
  }
  if (c.maxPacketBytes < 64) {
    throw new RangeError(
      `Invalid gossip config: maxPacketBytes must be >= 64, got ${c.maxPacketBytes}`,
    );
  }
  if (c.probeMode !== "round-robin" && c.probeMode !== "random") {
    throw new RangeError(
      `Invalid gossip config: probeMode must be "round-robin" or "random", got ${
        JSON.stringify(c.probeMode)
      }`,
    );
  }
  return c;
}

/**
 * memberlist's push/pull scaling: above 32 members the interval grows by one
 * step per doubling, so the full-state traffic stays bounded.
 *
 * @example Usage
 * ```ts
 * import { pushPullIntervalFor } from "./config.ts";
 * pushPullIntervalFor(30_000, 500); // 150000
 * ```
 */
export function pushPullIntervalFor(
  intervalMs: number,
  members: number,
): number {
  if (members <= 32) return intervalMs;
  const mult = Math.ceil(Math.log2(members) - Math.log2(32)) + 1;
  return intervalMs * mult;
}

/**
 * The retransmit limit of one broadcast: mult · ceil(log10(n + 1)).
 *
 * @example Usage
 * ```ts
 * import { retransmitLimit } from "./config.ts";
 * retransmitLimit(4, 500); // 12
 * ```
 */
export function retransmitLimit(mult: number, members: number): number {
  return mult * Math.ceil(Math.log10(members + 1));
}
