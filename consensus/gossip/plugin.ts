/**
 * The `consensus/gossip` plugin: SWIM + Lifeguard membership over UDP (see
 * `driver.ts`), provided as the `consensus:gossip` capability.
 *
 * Membership (`members()`) comes from gossip: alive → up, suspect → suspect,
 * dead or left → down, `lastSeen` the last authenticated packet from it.
 * Gossip alone cannot give a safe leader, so by default the plugin runs the
 * KV lease elector (`core/state/lease_elector.ts`) on the node's KV beside
 * it: `leader()`, `isLeader()` and `epoch()` are the lease's, fenced. With
 * `leader: "lowest-id"` (no shared KV) the leader is the lowest id among the
 * members this node sees up or suspect: deterministic, but NOT fenced — two
 * nodes with different views can both believe they lead, and `epoch()` only
 * counts the changes this node saw.
 *
 * Addresses: the gossip port is `port` if set, else the HTTP port +
 * `portOffset` (1000), so `plexus cluster` nodes on 8086, 8087… gossip on
 * 9086, 9087…; with HTTP port 0 it is 0 (a free port; set `seeds` then).
 * Seeds are `seeds` if set, else each `--peers` URL's host with its port +
 * `portOffset`. The cluster secret is `secret` or env `PLEXUS_MESH_SECRET`.
 *
 * @module
 */
import { z } from "zod";
import type {
  Consensus,
  LeaderChange,
  Member as ConsensusMember,
} from "../../core/consensus.ts";
import { definePlugin, type Plugin } from "../../core/plugin.ts";
import {
  DEFAULT_LEASE_MS,
  DEFAULT_RENEW_DEADLINE_MS,
  DEFAULT_RETRY_PERIOD_MS,
  LeaseElector,
  validateLeaseDurations,
} from "../../core/state/lease_elector.ts";
import { gossipConfig } from "./config.ts";
import { type DriverMember, GossipDriver } from "./driver.ts";
import { joinAddr } from "./_net.ts";

const ms = z.number().int().positive().max(3_600_000);

/**
 * Schema of the plugin's config (`pluginConfig.gossip`).
 *
 * @example Usage
 * ```ts
 * import { gossipPluginConfig } from "./plugin.ts";
 * const c = gossipPluginConfig.parse({ leader: "lowest-id" });
 * c.portOffset; // 1000
 * ```
 */
export const gossipPluginConfig = z.strictObject({
  /** UDP/TCP port; default: the HTTP port + portOffset. */
  port: z.number().int().min(0).max(65535).optional(),
  portOffset: z.number().int().min(-65535).max(65535).default(1000),
  /** Interface to bind; default: the node's `--host`. */
  hostname: z.string().min(1).optional(),
  /** host:port others reach this node at, if not the bound one. */
  advertise: z.string().min(3).optional(),
  /** host:port of members to join through; default: from `--peers`. */
  seeds: z.array(z.string().min(3)).optional(),
  /** Cluster secret; default: env PLEXUS_MESH_SECRET. */
  secret: z.string().min(16).optional(),
  transport: z.enum(["udp", "tcp"]).default("udp"),
  /** `kv-lease` (fenced; needs a KV all nodes share) or `lowest-id` (not fenced). */
  leader: z.enum(["kv-lease", "lowest-id"]).default("kv-lease"),
  /** Election name of the KV lease. */
  election: z.string().min(1).max(200).default("plexus"),
  leaseMs: ms.default(DEFAULT_LEASE_MS),
  renewDeadlineMs: ms.default(DEFAULT_RENEW_DEADLINE_MS),
  retryPeriodMs: ms.default(DEFAULT_RETRY_PERIOD_MS),
  /** SWIM timings and Lifeguard switches (see `GossipConfig`). */
  protocol: z.record(z.string(), z.unknown()).default({}),
  /** How long a stopping node keeps gossiping its leave notice. */
  leaveTimeoutMs: ms.default(2000),
  /** Period of the check that gossip members share this node's KV (kv-lease). */
  sharedKvCheckMs: ms.default(10_000),
}).superRefine((c, ctx) => {
  try {
    validateLeaseDurations(c);
  } catch (err) {
    ctx.addIssue({
      code: "custom",
      path: ["renewDeadlineMs"],
      message: (err as Error).message,
    });
  }
  try {
    gossipConfig(c.protocol);
  } catch (err) {
    ctx.addIssue({
      code: "custom",
      path: ["protocol"],
      message: (err as Error).message,
    });
  }
});

/** Config of the plugin after defaults. */
export type GossipPluginConfig = z.infer<typeof gossipPluginConfig>;

/** What `kernel.get("consensus:gossip")` returns. */
export interface GossipConsensus extends Consensus {
  /** Whether `leader()` is fenced (the KV lease) or a local choice. */
  readonly fenced: boolean;
  /** This node's gossip address. */
  readonly gossipAddr: string;
  /** The driver (stats, raw members). */
  readonly driver: GossipDriver;
}

/** Host and port of a base URL like `http://127.0.0.1:8086`. */
function urlHostPort(url: string): { hostname: string; port: number } {
  const u = new URL(url);
  const port = u.port ? Number(u.port) : u.protocol === "https:" ? 443 : 80;
  return { hostname: u.hostname.replace(/^\[|\]$/g, ""), port };
}

/**
 * `--peers` URLs → gossip seed address (host, HTTP port + `portOffset`) →
 * the URL it came from.
 *
 * @example Usage
 * ```ts
 * import { seedsFromPeers } from "./plugin.ts";
 * [...seedsFromPeers(["http://127.0.0.1:8087"], 1000).keys()]; // ["127.0.0.1:9087"]
 * ```
 */
export function seedsFromPeers(
  peers: readonly string[],
  portOffset: number,
): Map<string, string> {
  const out = new Map<string, string>();
  for (const url of peers) {
    const { hostname, port } = urlHostPort(url);
    out.set(joinAddr(hostname, port + portOffset), url);
  }
  return out;
}

const STATUS = {
  alive: "up",
  suspect: "suspect",
  dead: "down",
  left: "down",
} as const;

/**
 * The gossip plugin (`builtin:consensus/gossip`, `--consensus gossip`).
 *
 * @example Usage
 * ```ts
 * import gossip, { type GossipConsensus } from "./plugin.ts";
 * import { createTestKernel } from "../../core/testing.ts";
 * await using t = await createTestKernel([gossip], {
 *   pluginConfig: { gossip: { leader: "lowest-id", leaveTimeoutMs: 100 } },
 * });
 * t.kernel.get<GossipConsensus>("consensus:gossip").leader(); // "test-node"
 * ```
 */
const gossip: Plugin<GossipPluginConfig> = definePlugin({
  manifest: {
    name: "gossip",
    version: "1.0.0",
    kind: "consensus",
    api: "^1",
    provides: ["consensus:gossip"],
    config: gossipPluginConfig,
    permissions: { net: true, env: ["PLEXUS_MESH_SECRET"] },
  },
  async setup(ctx) {
    const c = ctx.config;
    const self = urlHostPort(ctx.node.address);
    const port = c.port ??
      (self.port === 0 ? 0 : self.port + c.portOffset);
    const hostname = c.hostname ?? self.hostname;
    const peerUrls = seedsFromPeers(ctx.node.peers ?? [], c.portOffset);
    const seeds = c.seeds ?? [...peerUrls.keys()];
    let secret = c.secret ?? Deno.env.get("PLEXUS_MESH_SECRET");
    if (!secret || secret.length < 16) {
      if (seeds.length > 0) {
        throw new Error(
          `gossip needs a cluster secret of at least 16 characters to join ${
            seeds.join(", ")
          }: set pluginConfig.gossip.secret or PLEXUS_MESH_SECRET (got ${
            secret ? `${secret.length} characters` : "none"
          })`,
        );
      }
      secret = crypto.randomUUID();
      ctx.log.warn(
        "gossip: no cluster secret and no seeds; running alone with a random secret",
      );
    }
    const unauthenticated = ctx.metrics.counter(
      "plexus_gossip_unauthenticated_packets_total",
      "Gossip packets dropped because their HMAC did not match the cluster secret",
    );
    const driver = await GossipDriver.start({
      id: ctx.node.id,
      hostname,
      port,
      advertise: c.advertise,
      secret,
      config: c.protocol,
      transport: c.transport,
      onUnauthenticated: () => unauthenticated.inc(),
      log: (level, msg, fields) => ctx.log[level](msg, { ...fields }),
    });
    const membersGauge = ctx.metrics.gauge(
      "plexus_gossip_members",
      "Gossip members this node knows, by state",
      () => {
        const counts = { alive: 0, suspect: 0, dead: 0, left: 0 };
        for (const m of driver.node.members()) counts[m.state]++;
        for (const [state, n] of Object.entries(counts)) {
          membersGauge.set(n, { state });
        }
      },
    );
    const eventsCounter = ctx.metrics.counter(
      "plexus_gossip_events_total",
      "Membership changes this node saw, by type",
    );

    // Leader: the KV lease when asked (fenced), else lowest id (not fenced).
    const useLease = c.leader === "kv-lease" && ctx.kernel.has("state:kv");
    if (c.leader === "kv-lease" && !useLease) {
      ctx.log.warn(
        "gossip: no state:kv for the KV lease; leader is the lowest id seen up (not fenced)",
      );
    }
    const elector = useLease
      ? new LeaseElector({
        kv: ctx.kernel.get("state:kv"),
        nodeId: ctx.node.id,
        name: c.election,
        leaseMs: c.leaseMs,
        renewDeadlineMs: c.renewDeadlineMs,
        retryPeriodMs: c.retryPeriodMs,
        onError: (error, during) =>
          ctx.log.warn("KV call failed during election; retrying", {
            during,
            election: c.election,
            error: error instanceof Error ? error.message : String(error),
          }),
      })
      : null;
    const listeners = new Set<(change: LeaderChange) => void>();
    let localLeader: string | null = null;
    let localEpoch = 0;
    const lowestUp = () => {
      const ids = driver.node.members()
        .filter((m) => m.state === "alive" || m.state === "suspect")
        .map((m) => m.id)
        .sort();
      return ids[0] ?? null;
    };
    const recompute = () => {
      const next = lowestUp();
      if (next === localLeader) return;
      localLeader = next;
      localEpoch++;
      const change = { leader: next, epoch: localEpoch };
      for (const fn of listeners) fn(change);
    };
    const offEvents = driver.onEvent((e) => {
      eventsCounter.inc({ type: e.type });
      if (e.type !== "update") {
        ctx.log.info(`gossip: ${e.id} ${e.type}`, {
          member: e.id,
          addr: e.addr,
          incarnation: e.incarnation,
        });
      }
      if (!elector) recompute();
    });
    if (elector) {
      elector.onLeaderChange((change) =>
        ctx.log.info("election leader changed", {
          election: c.election,
          leader: change.leader,
          epoch: change.epoch,
        })
      );
      elector.start();
    } else {
      recompute();
    }
    // The lease fences only among nodes sharing one KV. Each node stamps its
    // id in the plugin's keyspace; a live gossip member missing there twice
    // in a row writes to another KV, and its lease is its own.
    let unshared: string[] = [];
    let missingBefore = new Set<string>();
    const checkSharedKv = async () => {
      await ctx.kv.set(["nodes", ctx.node.id], Date.now(), {
        expireIn: 3 * c.sharedKvCheckMs,
      });
      const missing = new Set<string>();
      for (const m of driver.node.members()) {
        if (m.id === ctx.node.id || m.state !== "alive") continue;
        if ((await ctx.kv.get(["nodes", m.id])).value === null) {
          missing.add(m.id);
        }
      }
      const next = [...missing].filter((id) => missingBefore.has(id)).sort();
      missingBefore = missing;
      if (next.join() !== unshared.join() && next.length > 0) {
        ctx.log.warn(
          `gossip: member(s) ${
            next.join(", ")
          } do not share this node's KV, so the KV lease does not fence across them; use one --kv for all nodes or leader: "lowest-id"`,
          { members: next },
        );
      }
      unshared = next;
    };
    let kvCheck: ReturnType<typeof setTimeout> | undefined;
    let checking: Promise<void> | undefined;
    let stopped = false;
    const scheduleKvCheck = (delay: number) => {
      kvCheck = setTimeout(() => {
        checking = checkSharedKv().catch((err) =>
          ctx.log.debug("gossip: shared-KV check failed", {
            error: (err as Error).message,
          })
        ).finally(() => {
          if (!stopped) scheduleKvCheck(c.sharedKvCheckMs);
        });
      }, delay);
    };
    if (elector) scheduleKvCheck(0);
    driver.join(seeds);
    ctx.log.info("gossip: listening", {
      addr: driver.addr,
      udp: driver.udpApi ?? "off (TCP only)",
      seeds,
      leader: elector ? "kv-lease (fenced)" : "lowest-id (not fenced)",
    });

    const addressOf = (m: DriverMember) =>
      m.id === ctx.node.id ? ctx.node.address : peerUrls.get(m.addr) ?? m.addr;
    const api: GossipConsensus = {
      name: "gossip",
      fenced: elector !== null,
      gossipAddr: driver.addr,
      driver,
      leader: () => elector ? elector.leader() : localLeader,
      isLeader: () =>
        elector ? elector.isLeader() : localLeader === ctx.node.id,
      epoch: () => elector ? elector.epoch() : localEpoch,
      onLeaderChange: (fn) => {
        if (elector) return elector.onLeaderChange(fn);
        listeners.add(fn);
        return () => listeners.delete(fn);
      },
      members: () =>
        Promise.resolve(
          driver.members().map((m): ConsensusMember => ({
            id: m.id,
            address: addressOf(m),
            status: STATUS[m.state],
            lastSeen: m.lastSeen,
          })),
        ),
    };
    // Operators' view (and the console's consensus detail): members,
    // suspicions, Lifeguard health. Reads need a viewer.
    ctx.api("gossip").get("/status", "cluster:read", (h) =>
      h.json({
        ...driver.status(),
        address: ctx.node.address,
        leader: elector ? elector.leader() : localLeader,
      }));
    return {
      api,
      health: () => {
        const ms = driver.node.members();
        const up = ms.filter((m) => m.state === "alive").length;
        const leader = elector
          ? `leader ${
            elector.leader() ?? "none"
          } (kv-lease, fenced, epoch ${elector.epoch()})${
            unshared.length
              ? `; KV not shared with ${
                unshared.join(", ")
              }: not fenced across them`
              : ""
          }`
          : `leader ${localLeader ?? "none"} (lowest id, not fenced)`;
        return Promise.resolve({
          status: "up" as const,
          detail:
            `${up}/${ms.length} members alive over ${driver.transport} on ${driver.addr}; ${leader}`,
        });
      },
      stop: async (signal) => {
        offEvents();
        stopped = true;
        clearTimeout(kvCheck);
        await checking;
        if (elector) await elector.stop(signal);
        await driver.leave(c.leaveTimeoutMs);
      },
    };
  },
});

export default gossip;
