/**
 * Real-process Raft clusters for the tests in this folder: N `main.ts serve
 * --consensus raft` nodes on loopback, each with its own data dir and KV
 * file, fixed ports (so a restarted node comes back at the same address),
 * one cluster secret, and short election timeouts.
 *
 * @module
 */
import { join } from "node:path";
import {
  deadline,
  type PlexusProcess,
  poll,
  spawnPlexus,
} from "../integration/_process.ts";

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
export interface RaftProc {
  id: string;
  port: number;
  url: string;
  dir: string;
  proc?: PlexusProcess;
}

/** Free loopback ports (listen on 0, read, close). */
export function freePorts(n: number): number[] {
  const ls = Array.from(
    { length: n },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const ports = ls.map((l) => (l.addr as Deno.NetAddr).port);
  for (const l of ls) l.close();
  return ports;
}

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
export class RaftCluster {
  readonly nodes: RaftProc[];
  readonly root: string;
  readonly secret = crypto.randomUUID();
  readonly timing: RaftTiming;

  private constructor(root: string, nodes: RaftProc[], timing: RaftTiming) {
    this.root = root;
    this.nodes = nodes;
    this.timing = timing;
  }

  /** Creates the folders and starts every node. */
  static async start(n: number, timing = FAST): Promise<RaftCluster> {
    const root = await Deno.makeTempDir({ prefix: "plexus-raft-" });
    const ports = freePorts(n);
    const nodes = ports.map((port, i) => ({
      id: `n${i + 1}`,
      port,
      url: `http://127.0.0.1:${port}`,
      dir: join(root, `n${i + 1}`),
    }));
    const c = new RaftCluster(root, nodes, timing);
    for (const node of nodes) await Deno.mkdir(node.dir, { recursive: true });
    await Promise.all(nodes.map((_, i) => c.spawn(i)));
    return c;
  }

  /** Starts node `i` (again), on its port and data dir. */
  async spawn(i: number): Promise<PlexusProcess> {
    const node = this.nodes[i];
    const config = join(this.root, `${node.id}.json`);
    await Deno.writeTextFile(
      config,
      JSON.stringify({ pluginConfig: { raft: this.timing } }),
    );
    const proc = await spawnPlexus({
      dir: node.dir,
      port: String(node.port),
      args: [
        "--node-id",
        node.id,
        "--consensus",
        "raft",
        "--config",
        config,
        "--log-level",
        "warn",
        "--peers",
        this.nodes.filter((o) => o !== node).map((o) => o.url).join(","),
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

  /** Node `i`'s Raft status, or undefined when it does not answer. */
  async status(i: number): Promise<RaftStatusBody | undefined> {
    if (!this.running(i)) return undefined;
    try {
      const res = await this.api(i, "/api/v1/raft/status");
      if (!res.ok) {
        await res.body?.cancel();
        return undefined;
      }
      return await res.json();
    } catch {
      return undefined;
    }
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
