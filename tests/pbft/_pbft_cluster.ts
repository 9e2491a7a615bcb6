/**
 * Real-process PBFT clusters for the tests in this folder: N `main.ts serve
 * --consensus pbft` replicas on loopback, each with its own data dir, fixed
 * port, Ed25519 key (the member list with every public key in each node's
 * config), one link secret, and short timeouts. A replica can be started as
 * the test-only Byzantine build (equivocates as primary, then goes silent).
 *
 * @module
 */
import { join } from "node:path";
import { ed25519 } from "@noble/curves/ed25519.js";
import {
  deadline,
  type PlexusProcess,
  poll,
  spawnPlexus,
} from "../integration/_process.ts";
import { freePorts } from "../raft/_raft_cluster.ts";

const b64url = (u: Uint8Array) =>
  btoa(String.fromCharCode(...u)).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");

/** One replica. */
export interface PbftProc {
  id: string;
  port: number;
  url: string;
  dir: string;
  privateKey: string;
  publicKey: string;
  proc?: PlexusProcess;
}

/** What `GET /api/v1/pbft/status` answers. */
export interface PbftStatusBody {
  id: string;
  view: number;
  primary: string;
  changing: boolean;
  executed: number;
  executedSeq: number;
  stable: number;
  stateDigest: string;
}

/** A cluster of real processes. */
export class PbftCluster {
  readonly nodes: PbftProc[];
  readonly root: string;
  readonly secret = crypto.randomUUID();

  private constructor(root: string, nodes: PbftProc[]) {
    this.root = root;
    this.nodes = nodes;
  }

  /** Creates keys and folders and starts every replica; `byzantine` indexes run the Byzantine build. */
  static async start(
    n: number,
    byzantine: number[] = [],
  ): Promise<PbftCluster> {
    const root = await Deno.makeTempDir({ prefix: "plexus-pbft-" });
    const nodes = freePorts(n).map((port, i) => {
      const key = ed25519.utils.randomSecretKey();
      return {
        id: `n${i + 1}`,
        port,
        url: `http://127.0.0.1:${port}`,
        dir: join(root, `n${i + 1}`),
        privateKey: b64url(key),
        publicKey: b64url(ed25519.getPublicKey(key)),
      };
    });
    const c = new PbftCluster(root, nodes);
    for (const node of nodes) await Deno.mkdir(node.dir, { recursive: true });
    await Promise.all(nodes.map((_, i) => c.spawn(i, byzantine.includes(i))));
    return c;
  }

  /** Starts replica `i` (again) on its port and data dir; `byzantine` picks the test-only build. */
  async spawn(i: number, byzantine = false): Promise<PlexusProcess> {
    const node = this.nodes[i];
    const config = join(this.root, `${node.id}.json`);
    await Deno.writeTextFile(
      config,
      JSON.stringify({
        pluginConfig: {
          pbft: {
            members: this.nodes.map((m) => ({
              id: m.id,
              url: m.url,
              publicKey: m.publicKey,
            })),
            privateKey: node.privateKey,
            tickMs: 20,
            viewChangeMs: 400,
            checkpointInterval: 8,
            requestTimeoutMs: 4000,
            ...(byzantine ? { unsafeByzantineSilentAfterMs: 1500 } : {}),
          },
        },
      }),
    );
    const proc = await spawnPlexus({
      dir: node.dir,
      port: String(node.port),
      args: [
        "--node-id",
        node.id,
        "--consensus",
        "pbft",
        "--config",
        config,
        "--log-level",
        "warn",
      ],
      env: { PLEXUS_MESH_SECRET: this.secret },
    });
    proc.url = node.url;
    node.proc = proc;
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

  /** SIGKILLs replica `i` and waits for it to be gone. */
  async kill(i: number): Promise<void> {
    const p = this.nodes[i].proc;
    if (!p || p.exited) return;
    p.signal("SIGKILL");
    await deadline(p.status, 30_000, `${this.nodes[i].id} to die`);
  }

  /** Whether replica `i` runs. */
  running(i: number): boolean {
    const p = this.nodes[i].proc;
    return p !== undefined && !p.exited;
  }

  /** `fetch` on replica `i` with an admin token of that node. */
  async api(
    i: number,
    path: string,
    init: RequestInit = {},
  ): Promise<Response> {
    return await this.nodes[i].proc!.api(path, {
      ...init,
      signal: AbortSignal.timeout(10_000),
    });
  }

  /** Replica `i`'s status, or undefined when it does not answer. */
  async status(i: number): Promise<PbftStatusBody | undefined> {
    if (!this.running(i)) return undefined;
    try {
      const res = await this.api(i, "/api/v1/pbft/status");
      if (!res.ok) {
        await res.body?.cancel();
        return undefined;
      }
      return await res.json();
    } catch {
      return undefined;
    }
  }

  /** Waits until `pred` holds for the statuses of replicas `which`. */
  async until(
    what: string,
    which: number[],
    pred: (s: PbftStatusBody[]) => boolean,
    timeoutMs = 60_000,
  ): Promise<PbftStatusBody[]> {
    const end = Date.now() + timeoutMs;
    let last: (PbftStatusBody | undefined)[] = [];
    while (Date.now() < end) {
      last = await Promise.all(which.map((i) => this.status(i)));
      if (last.every((s) => s) && pred(last as PbftStatusBody[])) {
        return last as PbftStatusBody[];
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(
      `timed out after ${timeoutMs} ms waiting for ${what}; last statuses: ${
        JSON.stringify(last)
      }`,
    );
  }

  /** Kills every replica and removes the folders. */
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
