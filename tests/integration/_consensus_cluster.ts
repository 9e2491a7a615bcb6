/**
 * Real-process clusters of one consensus plugin, the part the Raft
 * (`tests/raft/_raft_cluster.ts`) and PBFT (`tests/pbft/_pbft_cluster.ts`)
 * test clusters share: N `main.ts serve --consensus NAME` nodes on
 * loopback, each with its own data dir and fixed port (so a restarted node
 * comes back at the same address), its own config file, one cluster
 * secret; start, SIGKILL, API calls with the node's admin token, status
 * polling, clean-up.
 *
 * @module
 */
import { join } from "node:path";
import { deadline, type PlexusProcess, poll, spawnPlexus } from "./_process.ts";

/** One node. */
export interface ClusterNode {
  id: string;
  port: number;
  url: string;
  dir: string;
  proc?: PlexusProcess;
}

/**
 * Free loopback ports (listen on 0, read, close).
 *
 * @example Usage
 * ```ts
 * import { freePorts } from "./_consensus_cluster.ts";
 * freePorts(3).length; // 3
 * ```
 */
export function freePorts(n: number): number[] {
  const ls = Array.from(
    { length: n },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const ports = ls.map((l) => (l.addr as Deno.NetAddr).port);
  for (const l of ls) l.close();
  return ports;
}

/**
 * `n` nodes `n1..` with free ports and folders under a new temp dir.
 *
 * @example Usage
 * ```ts ignore
 * const { root, nodes } = await clusterNodes(3, "plexus-raft-");
 * ```
 */
export async function clusterNodes(
  n: number,
  prefix: string,
): Promise<{ root: string; nodes: ClusterNode[] }> {
  const root = await Deno.makeTempDir({ prefix });
  const nodes = freePorts(n).map((port, i) => ({
    id: `n${i + 1}`,
    port,
    url: `http://127.0.0.1:${port}`,
    dir: join(root, `n${i + 1}`),
  }));
  for (const node of nodes) await Deno.mkdir(node.dir, { recursive: true });
  return { root, nodes };
}

/**
 * A cluster of real processes running `consensus`, whose status route is
 * `/api/v1/{consensus}/status` and answers `S`.
 *
 * @example Usage
 * ```ts ignore
 * class MyCluster extends ConsensusCluster<MyStatus, ClusterNode> {}
 * ```
 */
export class ConsensusCluster<S, N extends ClusterNode = ClusterNode> {
  readonly nodes: N[];
  readonly root: string;
  readonly consensus: string;
  readonly secret = crypto.randomUUID();

  protected constructor(root: string, nodes: N[], consensus: string) {
    this.root = root;
    this.nodes = nodes;
    this.consensus = consensus;
  }

  /**
   * Starts node `i` (again) on its port and data dir with `config` as its
   * config file and `args` after the common flags; resolves once it listens.
   */
  protected async spawnNode(
    i: number,
    config: unknown,
    args: string[] = [],
  ): Promise<PlexusProcess> {
    const node = this.nodes[i];
    const file = join(this.root, `${node.id}.json`);
    await Deno.writeTextFile(file, JSON.stringify(config));
    const proc = await spawnPlexus({
      dir: node.dir,
      port: String(node.port),
      args: [
        "--node-id",
        node.id,
        "--consensus",
        this.consensus,
        "--config",
        file,
        "--log-level",
        "warn",
        ...args,
      ],
      env: { PLEXUS_MESH_SECRET: this.secret },
    });
    proc.url = node.url;
    node.proc = proc;
    // Before this the node key may not exist yet (and a failed token read is cached).
    await poll(async () => {
      if (proc.exited) {
        throw new Error(`${node.id} exited at start; stderr:\n${proc.stderr}`);
      }
      try {
        const res = await fetch(`${node.url}/health`);
        await res.body?.cancel();
        return true;
      } catch {
        return false;
      }
    }, `${node.id} listening`);
    return proc;
  }

  /** SIGKILLs node `i` and waits for it to be gone. */
  async kill(i: number): Promise<void> {
    const p = this.nodes[i].proc;
    if (!p || p.exited) return;
    p.signal("SIGKILL");
    await deadline(p.status, 30_000, `${this.nodes[i].id} to die`);
  }

  /** Whether node `i` runs. */
  running(i: number): boolean {
    const p = this.nodes[i].proc;
    return p !== undefined && !p.exited;
  }

  /** `fetch` on node `i` with an admin token of that node. */
  async api(
    i: number,
    path: string,
    init: RequestInit = {},
  ): Promise<Response> {
    const p = this.nodes[i].proc!;
    return await p.api(path, { ...init, signal: AbortSignal.timeout(10_000) });
  }

  /** Node `i`'s status, or undefined when it does not answer. */
  async status(i: number): Promise<S | undefined> {
    if (!this.running(i)) return undefined;
    try {
      const res = await this.api(i, `/api/v1/${this.consensus}/status`);
      if (!res.ok) {
        await res.body?.cancel();
        return undefined;
      }
      return await res.json();
    } catch {
      return undefined;
    }
  }

  /** Waits until `pred` holds for the statuses of nodes `which`. */
  async until(
    what: string,
    which: number[],
    pred: (s: S[]) => boolean,
    timeoutMs = 60_000,
  ): Promise<S[]> {
    const end = Date.now() + timeoutMs;
    let last: (S | undefined)[] = [];
    while (Date.now() < end) {
      last = await Promise.all(which.map((i) => this.status(i)));
      if (last.every((s) => s) && pred(last as S[])) return last as S[];
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(
      `timed out after ${timeoutMs} ms waiting for ${what}; last statuses: ${
        JSON.stringify(last)
      }`,
    );
  }

  /** Kills every node and removes the folders. */
  async close(): Promise<void> {
    await Promise.all(this.nodes.map(async (n) => {
      const p = n.proc;
      if (!p) return;
      p.signal("SIGKILL");
      await p.status;
      await p.exit().catch(() => {});
    }));
    await Deno.remove(this.root, { recursive: true }).catch(() => {});
  }
}
