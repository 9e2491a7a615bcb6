/**
 * Real-process Raft clusters for the tests in this folder: N `main.ts serve
 * --consensus raft` nodes on loopback, each with its own data dir and KV
 * file, fixed ports (so a restarted node comes back at the same address),
 * one cluster secret, and short election timeouts (the process handling
 * is {@linkcode ConsensusCluster}'s, shared with the PBFT tests).
 *
 * @module
 */
import { join } from "node:path";
import {
  type ClusterNode,
  clusterNodes,
  ConsensusCluster,
  freePorts,
} from "../integration/_consensus_cluster.ts";
import type { PlexusProcess } from "../integration/_process.ts";

/** Timing of the nodes' Raft (plugin config). */
export interface RaftTiming {
  tickMs: number;
  electionTick: number;
  heartbeatTick: number;
  requestTimeoutMs: number;
}

/** 150–300 ms election timeouts: 15 ms ticks × [10, 20). */
export const FAST: RaftTiming = {
  tickMs: 15,
  electionTick: 10,
  heartbeatTick: 3,
  requestTimeoutMs: 2000,
};

/** One node of a {@linkcode RaftCluster}. */
export type RaftProc = ClusterNode;

/** Status as `GET /api/v1/raft/status` answers. */
export interface RaftStatusBody {
  id: string;
  role: string;
  term: number;
  lead: string;
  commit: number;
  applied: number;
  voters: string[];
}

/** A cluster of real processes. */
export class RaftCluster extends ConsensusCluster<RaftStatusBody> {
  readonly timing: RaftTiming;

  private constructor(root: string, nodes: RaftProc[], timing: RaftTiming) {
    super(root, nodes, "raft");
    this.timing = timing;
  }

  /** Creates the folders and starts every node. */
  static async start(n: number, timing = FAST): Promise<RaftCluster> {
    const { root, nodes } = await clusterNodes(n, "plexus-raft-");
    const c = new RaftCluster(root, nodes, timing);
    await Promise.all(nodes.map((_, i) => c.spawn(i)));
    return c;
  }

  /**
   * Starts node `i` (again), on its port and data dir; `join` starts it as
   * a joiner (plugin config `join: true`), `peers` replaces its `--peers`
   * (default every other node).
   */
  spawn(
    i: number,
    o: { join?: boolean; peers?: string[] } = {},
  ): Promise<PlexusProcess> {
    const node = this.nodes[i];
    const peers = o.peers ??
      this.nodes.filter((x) => x !== node).map((x) => x.url);
    return this.spawnNode(i, {
      pluginConfig: {
        raft: { ...this.timing, ...(o.join ? { join: true } : {}) },
      },
    }, ["--peers", peers.join(",")]);
  }

  /** Adds a node `id` with a free port and a folder (not started); returns its index. */
  async add(id: string): Promise<number> {
    const [port] = freePorts(1);
    const node: RaftProc = {
      id,
      port,
      url: `http://127.0.0.1:${port}`,
      dir: join(this.root, id),
    };
    await Deno.mkdir(node.dir, { recursive: true });
    this.nodes.push(node);
    return this.nodes.length - 1;
  }

  /** Waits for a node that says it leads (and is believed by a running majority); returns its index. */
  async leader(timeoutMs = 60_000): Promise<number> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      const all = await Promise.all(this.nodes.map((_, i) => this.status(i)));
      const leaders = all
        .map((s, i) => ({ s, i }))
        .filter(({ s }) => s?.role === "leader");
      for (const { s, i } of leaders) {
        const agree = all.filter((o) =>
          o?.lead === s!.id && o.term === s!.term
        );
        if (agree.length > this.nodes.length / 2) return i;
      }
      await new Promise((r) => setTimeout(r, 30));
    }
    throw new Error(`no leader within ${timeoutMs} ms`);
  }

  /**
   * Waits until node `i` follows node `leader`: `leader()` returns once a
   * majority agrees, and a third node may not have had a heartbeat yet (it
   * answers 503 "no leader known" to a write it would forward).
   */
  async follows(i: number, leader: number, timeoutMs = 10_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    const id = this.nodes[leader].id;
    while ((await this.status(i))?.lead !== id) {
      if (Date.now() > end) {
        throw new Error(
          `node ${i} did not follow ${id} within ${timeoutMs} ms`,
        );
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}
