/**
 * The `consensus/raft` plugin: provides `consensus:raft`, a Raft node (the
 * deterministic core run by {@linkcode RaftDriver}) over authenticated
 * WebSocket links ({@linkcode startLinks}) with a file-backed log
 * ({@linkcode FileStorage}) under `DATA_DIR/raft/`, and a replicated KV
 * state machine served at `/api/v1/raft/*` (claimed with `ctx.api`, so behind
 * the node's authentication, permission, rate-limit and audit chain).
 *
 * Membership: node ids are learned at the link handshake. On its first
 * start a node waits until every peer URL (`members` config, else the
 * node's `--peers`) has proved its id, records `[self, ...peers]` as the
 * bootstrap voters in its log, and only then starts Raft; a restart reads
 * them back and starts at once. A node started with `join: true` instead
 * waits for one peer's link and starts as an empty non-voter, until a
 * leader adds it (`POST /api/v1/raft/members`, see {@linkcode createMembership}).
 *
 * Config (under `pluginConfig.raft`): `secret` (else env
 * `PLEXUS_MESH_SECRET`; at least 16 characters), `peers` (base URLs;
 * default `--peers`), `tickMs` (50), `electionTick` (10: a timeout random
 * in [500, 1000) ms), `heartbeatTick` (2), `requestTimeoutMs` (5000),
 * `compactEvery` (20000 entries), `join` (false).
 *
 * @module
 */
import { join } from "node:path";
import { z } from "zod";
import type { Consensus, Member } from "../../core/consensus.ts";
import { definePlugin, type Plugin } from "../../core/plugin.ts";
import { isConsensusAnswer } from "../_shared/errors.ts";
import {
  addKvRoutes,
  jsonObjectBody,
  kvFailure,
} from "../_shared/kv_routes.ts";
import {
  type ProposeResult,
  RaftDriver,
  RaftUnavailableError,
  type ReadResult,
} from "./driver.ts";
import { FileStorage } from "./file_storage.ts";
import { type KvCommand, parseKvCommand } from "./kv_machine.ts";
import { startLinks } from "./links.ts";
import {
  createMembership,
  type MemberChange,
  parseMemberAdd,
} from "./members.ts";
import type { RaftStatus } from "./core.ts";

const ms = z.number().int().positive().max(3_600_000);

/**
 * Schema of the plugin's config.
 *
 * @example Usage
 * ```ts
 * import { raftConfig } from "./plugin.ts";
 * raftConfig.parse({ secret: "0123456789abcdef" }).tickMs; // 50
 * ```
 */
export const raftConfig = z.strictObject({
  secret: z.string().min(16, "use at least 16 characters").optional(),
  peers: z.array(z.url({ protocol: /^https?$/ })).optional(),
  tickMs: ms.default(50),
  electionTick: z.number().int().min(2).max(1000).default(10),
  heartbeatTick: z.number().int().min(1).max(999).default(2),
  requestTimeoutMs: ms.default(5000),
  compactEvery: z.number().int().min(100).default(20_000),
  join: z.boolean().default(false),
}).refine((c) => c.heartbeatTick < c.electionTick, {
  message: "heartbeatTick must be below electionTick",
  path: ["heartbeatTick"],
});

/** Config of the plugin after defaults. */
export type RaftConfig = z.infer<typeof raftConfig>;

/** What `kernel.get("consensus:raft")` returns. */
export interface RaftConsensus extends Consensus {
  /** Commits a KV command through the log; resolves once applied on this node. */
  propose(command: KvCommand): Promise<ProposeResult>;
  /** A linearizable read (ReadIndex). */
  read(key: string): Promise<ReadResult>;
  /** The core's status, or undefined before the bootstrap voters are known. */
  status(): (RaftStatus & { applied: number }) | undefined;
}

const isAnswer = isConsensusAnswer;
const failure = (err: unknown): Response => kvFailure(err, isAnswer);

/**
 * The raft plugin (`builtin:consensus/raft`).
 *
 * @example A one-node cluster in a test kernel
 * ```ts ignore
 * import { createTestKernel } from "../../core/testing.ts";
 * import raft, { type RaftConsensus } from "./plugin.ts";
 * await using t = await createTestKernel([raft], { pluginConfig: { raft: { secret: "0123456789abcdef" } } });
 * const api = t.kernel.get<RaftConsensus>("consensus:raft");
 * await api.propose({ op: "write", key: "x", value: "1" }); // once it leads
 * ```
 */
const raft: Plugin<RaftConfig> = definePlugin({
  manifest: {
    name: "raft",
    version: "1.0.0",
    kind: "consensus",
    api: "^1",
    provides: ["consensus:raft"],
    config: raftConfig,
    permissions: {
      net: true,
      read: true,
      write: true,
      env: ["PLEXUS_MESH_SECRET"],
    },
  },
  async setup(ctx) {
    const c = ctx.config;
    const secret = c.secret ?? Deno.env.get("PLEXUS_MESH_SECRET");
    if (!secret || secret.length < 16) {
      throw new Error(
        "raft needs a cluster secret of at least 16 characters: set pluginConfig.raft.secret or PLEXUS_MESH_SECRET",
      );
    }
    const me = ctx.node.id;
    const peerUrls = c.peers ?? ctx.node.peers ?? [];
    const raftDir = join(ctx.node.dataDir, "raft");
    const storage = await FileStorage.open(raftDir);
    // For `plexus raft recover` on a node started with --node-id.
    await Deno.writeTextFile(join(raftDir, "node-id"), me + "\n");
    if (storage.report.truncatedBytes > 0) {
      ctx.log.warn("raft log had a torn last record; cut it off", {
        ...storage.report,
      });
    }
    let driver: RaftDriver | undefined;
    const removedFile = join(raftDir, "removed");
    const peersFile = join(raftDir, "peers.json");
    let removed = await Deno.stat(removedFile).then(() => true, () => false);
    const learned: string[] = await Deno.readTextFile(peersFile).then(
      (t) => JSON.parse(t),
      () => [],
    );
    const known = new Set<string>();
    const electionMs = c.tickMs * c.electionTick;
    const listeners = new Set<
      (ch: { leader: string | null; epoch: number }) => void
    >();
    const links = startLinks({
      id: me,
      address: () => ctx.node.address,
      secret,
      peers: [...new Set([...peerUrls, ...learned])],
      onMessages: (_from, ms) => driver?.receive(ms),
      onControl: (from, d) => membership.onControl(from, d),
      onPeer: (id) => {
        known.add(id);
        membership.onPeerLinked(id);
        maybeBootstrap();
      },
    });
    ctx.http.get("/link", (h) => links.handleUpgrade(h.req.raw));

    const startDriver = (voters: string[]) => {
      driver = new RaftDriver({
        id: me,
        voters,
        storage,
        send: (to, ms) => {
          if (!links.send(to, ms)) driver?.node.reportUnreachable(to);
        },
        tickMs: c.tickMs,
        electionTick: c.electionTick,
        heartbeatTick: c.heartbeatTick,
        requestTimeoutTicks: Math.max(
          1,
          Math.ceil(c.requestTimeoutMs / c.tickMs),
        ),
        compactEvery: c.compactEvery,
        onFatal: (err) =>
          ctx.log.error("raft storage failed; this node stopped", {
            error: err,
          }),
      });
      driver.onLeaderChange((ch) => {
        ctx.log.info("raft leader changed", {
          leader: ch.leader,
          term: ch.epoch,
          self: ch.leader === me,
        });
        for (const fn of listeners) fn(ch);
      });
      driver.start();
      ctx.log.info("raft started", {
        voters: driver.node.voters(),
        term: driver.node.term,
        lastIndex: driver.node.log.lastIndex(),
        records: storage.report.records,
      });
    };
    let bootstrapping = false;
    const maybeBootstrap = () => {
      if (driver || bootstrapping || removed) return;
      if (c.join ? known.size === 0 : known.size < peerUrls.length) return;
      bootstrapping = true;
      // A joining node starts with no voters: it never campaigns and only
      // follows a leader, until a configuration entry names it.
      const voters = c.join ? [] : [me, ...known].sort();
      storage.saveVoters(voters).then(
        () => {
          if (!ctx.signal.aborted) startDriver(voters);
        },
        (err) =>
          ctx.log.error("cannot record bootstrap voters", { error: err }),
      );
    };
    const saved = storage.voters();
    if (removed) {
      ctx.log.warn(
        "raft: this node was removed from its cluster; not starting",
        {
          marker: removedFile,
        },
      );
    } else if (saved) startDriver(saved);
    else {
      ctx.log.info(
        c.join
          ? "raft waiting for a peer's link before joining"
          : "raft waiting for every peer's id before bootstrap",
        { peers: peerUrls },
      );
      maybeBootstrap();
    }

    const membership = createMembership({
      id: me,
      driver: () => (removed ? undefined : driver),
      links,
      timeoutMs: c.requestTimeoutMs,
      rememberPeer: (url) => {
        if (learned.includes(url) || peerUrls.includes(url)) return;
        learned.push(url);
        Deno.writeTextFile(peersFile, JSON.stringify(learned)).catch((err) =>
          ctx.log.error("cannot record a raft peer's URL", { url, error: err })
        );
      },
      onRemoved: () => {
        if (removed) return;
        removed = true;
        ctx.log.warn("raft: this node was removed from the cluster", {});
        Deno.writeTextFile(removedFile, new Date().toISOString() + "\n")
          .catch((err) =>
            ctx.log.error("cannot record the raft removal", { error: err })
          );
        // Let the last messages (a removed leader's final append) leave first.
        const d = driver;
        const t = setTimeout(() => d?.stop(), 2 * electionMs);
        Deno.unrefTimer(t);
      },
    });

    const need = (): RaftDriver => {
      if (removed) {
        throw new RaftUnavailableError(
          `raft node ${me} was removed from the cluster; send requests to a member`,
        );
      }
      if (driver && !driver.node.promotable()) {
        throw new RaftUnavailableError(
          `raft node ${me} is not a voter (yet): add it with POST /api/v1/raft/members on a member`,
        );
      }
      if (!driver) {
        throw new RaftUnavailableError(
          `raft on ${me} has not bootstrapped: waiting for peers (${known.size} of ${peerUrls.length} linked)`,
        );
      }
      return driver;
    };

    // Reads need a viewer, KV writes an analyst, membership changes an admin.
    const routes = ctx.api("raft");
    routes.get("/status", "cluster:read", (h) =>
      h.json({
        id: me,
        address: ctx.node.address,
        ...(driver?.status() ?? { role: "bootstrapping" }),
        ...(removed ? { role: "removed" } : {}),
        peers: links.peers(),
      }));
    addKvRoutes(routes, {
      read: (key) => need().read(key),
      write: (cmd) => need().propose(parseKvCommand(cmd)),
      isAnswer,
    });
    const body = jsonObjectBody;

    const answer = async (req: MemberChange) => {
      const a = await membership.change(req);
      return Response.json(a.body, { status: a.status });
    };
    routes.get("/members", "cluster:read", async (h) =>
      h.json({
        leader: driver?.leader() || null,
        voters: removed ? [] : await api.members(),
      }));
    routes.post("/members", "admin", async (h) => {
      try {
        return await answer(parseMemberAdd(await body(h.req.raw)));
      } catch (err) {
        return failure(err);
      }
    });
    routes.delete(
      "/members/:id",
      "admin",
      (h) => answer({ op: "remove", id: h.req.param("id") }),
    );

    const api: RaftConsensus = {
      name: "raft",
      leader: () => driver?.leader() || null,
      isLeader: () => driver?.isLeader() ?? false,
      epoch: () => driver?.node.term ?? 0,
      onLeaderChange: (fn) => {
        listeners.add(fn);
        return () => listeners.delete(fn);
      },
      members: () => {
        const now = Date.now();
        const voters = driver?.node.voters() ?? [me];
        const peers = new Map(links.peers().map((p) => [p.id, p]));
        return Promise.resolve(voters.map((id): Member => {
          if (id === me) {
            return {
              id,
              address: ctx.node.address,
              status: "up",
              lastSeen: now,
            };
          }
          const p = peers.get(id);
          const seen = driver?.lastHeard(id) ?? 0;
          // Only leader<->follower pairs talk all the time; two followers
          // judge each other by their link alone.
          const talks = driver?.isLeader() || driver?.leader() === id;
          return {
            id,
            address: p?.address ?? "",
            status: !p?.connected
              ? "down"
              : !talks || now - seen <= 2 * electionMs
              ? "up"
              : "suspect",
            lastSeen: seen || (p?.connected && !talks ? now : 0),
          };
        }));
      },
      propose: (cmd) => need().propose(cmd),
      read: (key) => need().read(key),
      status: () => driver?.status(),
    };
    return {
      api,
      health: () =>
        Promise.resolve(
          !driver
            ? {
              status: "down" as const,
              detail: "waiting for peers to bootstrap",
            }
            : {
              status: driver.leader() ? "up" as const : "down" as const,
              detail:
                `${driver.node.role} in term ${driver.node.term}, leader ${
                  driver.leader() || "none"
                }`,
            },
        ),
      stop: () => {
        driver?.stop();
        if (!driver) storage.close();
        links.close();
        return Promise.resolve();
      },
    };
  },
});

export default raft;
