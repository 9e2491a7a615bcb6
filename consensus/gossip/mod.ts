/**
 * `consensus/gossip`: SWIM membership and failure detection with the
 * Lifeguard extensions, as a deterministic core a driver feeds with
 * received packets and timer wake-ups.
 *
 * Gossip gives membership and failure detection, not a safe leader: two
 * members can see different memberships at the same moment. Pair it with the
 * KV lease for anything that must be fenced.
 *
 * The default export is the plugin (`builtin:consensus/gossip`,
 * `--consensus gossip`), which provides `consensus:gossip`, a
 * {@linkcode GossipConsensus}.
 *
 * @example Usage
 * ```ts
 * import { SwimNode } from "./mod.ts";
 * const node = new SwimNode({ id: "n1", addr: "10.0.0.1:7946", now: 0 });
 * node.join(["10.0.0.2:7946"], 0);
 * const out = node.drainPackets(); // send each { to, data, reliable }
 * out[0].to; // "10.0.0.2:7946"
 * node.nextTickAt(); // call node.tick(now) then
 * ```
 *
 * @module
 */
export { default } from "./plugin.ts";
export {
  type GossipConsensus,
  type GossipPluginConfig,
  gossipPluginConfig,
  seedsFromPeers,
} from "./plugin.ts";
export { Awareness } from "./awareness.ts";
export { BroadcastQueue } from "./broadcast.ts";
export {
  concatPacket,
  decodePacket,
  encodePacket,
  type GossipMessage,
  type MemberSnapshot,
  type MemberState,
} from "./codec.ts";
export {
  DEFAULT_GOSSIP_CONFIG,
  type GossipConfig,
  gossipConfig,
  PLAIN_SWIM,
  type ProbeMode,
  pushPullIntervalFor,
  retransmitLimit,
} from "./config.ts";
export {
  type Member,
  type MembershipEvent,
  type MembershipEventType,
  type OutboundPacket,
  SwimNode,
  type SwimNodeOptions,
  type SwimStats,
} from "./node.ts";
export { Suspicion, suspicionTimeout } from "./suspicion.ts";
