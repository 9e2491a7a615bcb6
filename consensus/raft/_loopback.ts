/**
 * In-process Raft nodes over real loopback sockets, for benchmarks: each
 * node has its own HTTP server (for its link endpoint), authenticated
 * WebSocket links ({@linkcode startLinkedNodes} of
 * `consensus/_shared/loopback.ts`, shared with PBFT's), a file-backed log
 * with fsync and a {@linkcode RaftDriver}. A "kill" drops a node at once (no
 * goodbye to its peers), like a crash.
 *
 * @module
 */
import { join } from "node:path";
import { RaftDriver } from "./driver.ts";
import { FileStorage } from "./file_storage.ts";
import { type LinkedNode, startLinkedNodes } from "../_shared/loopback.ts";
import type { Message } from "./types.ts";

/** Options of {@linkcode startLoopbackCluster}. */
export interface LoopbackOptions {
  /** Folder for the nodes' logs. */
  dir: string;
  /** @default {10} */
  tickMs?: number;
  /** @default {15} */
  electionTick?: number;
  /** @default {3} */
  heartbeatTick?: number;
  /** fdatasync each Ready. @default {true} */
  sync?: boolean;
}

/** One node. */
export type LoopbackNode = LinkedNode<RaftDriver, Message>;

/** A running in-process cluster. */
export interface LoopbackCluster {
  nodes: LoopbackNode[];
  /** Starts node `i` (again) from its log. */
  start(i: number): Promise<void>;
  /** Drops node `i` at once. */
  kill(i: number): Promise<void>;
  /** Index of the node that leads with a majority agreeing, or -1. */
  leader(): number;
  close(): Promise<void>;
}

const SECRET = "loopback-bench-secret";

/**
 * Starts `n` nodes on free loopback ports.
 *
 * @example Usage
 * ```ts ignore
 * const c = await startLoopbackCluster(3, { dir: await Deno.makeTempDir() });
 * while (c.leader() < 0) await new Promise((r) => setTimeout(r, 10));
 * await c.nodes[c.leader()].driver!.propose({ op: "write", key: "x", value: "1" });
 * await c.close();
 * ```
 */
export async function startLoopbackCluster(
  n: number,
  options: LoopbackOptions,
): Promise<LoopbackCluster> {
  const o = {
    tickMs: 10,
    electionTick: 15,
    heartbeatTick: 3,
    sync: true,
    ...options,
  };
  const c = await startLinkedNodes<RaftDriver, Message>(n, {
    idPrefix: "n",
    secret: SECRET,
    driver: async (node, ids, links) => {
      const driver: RaftDriver = new RaftDriver({
        id: node.id,
        voters: ids,
        storage: await FileStorage.open(join(o.dir, node.id), {
          sync: o.sync,
        }),
        send: (to, ms) => {
          if (!links.send(to, ms)) driver.node.reportUnreachable(to);
        },
        tickMs: o.tickMs,
        electionTick: o.electionTick,
        heartbeatTick: o.heartbeatTick,
      });
      return driver;
    },
  });
  const { nodes } = c;
  return {
    nodes,
    start: c.start,
    kill: c.kill,
    leader() {
      for (let i = 0; i < n; i++) {
        const d = nodes[i].driver;
        if (!d?.isLeader()) continue;
        const agree = nodes.filter((x) =>
          x.driver?.leader() === d.id && x.driver.node.term === d.node.term
        ).length;
        if (agree > n / 2) {
          return i;
        }
      }
      return -1;
    },
    close: c.close,
  };
}
