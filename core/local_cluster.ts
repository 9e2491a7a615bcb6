/**
 * `plexus cluster`: N local nodes as child processes on consecutive ports,
 * sharing what their consensus needs (one KV file for kv-lease) and knowing
 * each other as `--peers`.
 *
 * Node `i` (1-based) is `node-i` on `port + i - 1`, with data dir
 * `DIR/node-i`; every node gets the same `--kv` (default `DIR/cluster.kv`)
 * and `--consensus`, and one `PLEXUS_MESH_SECRET` (yours, or a random one)
 * for node-to-node links. Children inherit stdout/stderr (their JSON log lines
 * name their node). A child that exits is reported and the others keep
 * running, so you can kill one and watch the rest take over; SIGINT/SIGTERM
 * stop them all gracefully (one SIGTERM each), a later second one kills
 * them; the command exits when every child has (0 if all exited 0). Nodes
 * run in their own process groups, so a SIGKILL of the cluster process
 * leaves them running (their pids are printed at start).
 *
 * With `--consensus pbft` the nodes are PBFT replicas, which need a fixed
 * member list with each one's Ed25519 public key (docs/pbft.md): the first
 * start makes each node a key pair, kept in `DIR/node-i/pbft-key.json`
 * (mode 600; later starts reuse it, since a replica's log holds what it
 * signed), and writes `DIR/pbft.json` — `pluginConfig.pbft.members` in node
 * order — which every node gets as `PLEXUS_CONFIG`, with its own private
 * key as `PLEXUS_PBFT_PRIVATE_KEY`. PBFT needs 3f + 1 ≥ 4 nodes.
 *
 * @module
 */
import { join } from "node:path";
import { V8_FLAGS_ARG } from "./runtime_flags.ts";
import { ed25519 } from "@noble/curves/ed25519.js";

/** Options of {@linkcode startLocalCluster}. */
export interface LocalClusterOptions {
  nodes: number;
  consensus: string;
  /** First node's port. @default {8086} */
  port?: number;
  /** @default {"127.0.0.1"} */
  host?: string;
  /** Parent of the nodes' data dirs. @default {"./data/cluster"} */
  dataDir?: string;
  /** Shared KV (path or KV Connect URL). @default {DIR/cluster.kv} */
  kv?: string;
  /** Extra flags for every node's `serve`. */
  extraArgs?: string[];
  /** The script to run (`main.ts` or a bundle). */
  script: string;
  /** Where progress lines go. @default {console.error} */
  say?: (line: string) => void;
}

/** One PBFT replica's key pair (base64url: the 32-byte seed and the public key). */
export interface PbftNodeKey {
  publicKey: string;
  privateKey: string;
}

const b64url = (bytes: Uint8Array) =>
  bytes.toBase64({ alphabet: "base64url", omitPadding: true });

/**
 * The PBFT member config of a local cluster: each node's key pair (read
 * from `DIR/node-i/pbft-key.json`, made there if missing) and
 * `DIR/pbft.json` holding `pluginConfig.pbft.members` in node order.
 * Returns the config file's path and each node's private key.
 *
 * @example Usage
 * ```ts ignore
 * import { writePbftClusterConfig } from "./local_cluster.ts";
 * const { configFile, keys } = writePbftClusterConfig("./data/cluster", [
 *   { id: "node-1", url: "http://127.0.0.1:8086" },
 *   { id: "node-2", url: "http://127.0.0.1:8087" },
 *   { id: "node-3", url: "http://127.0.0.1:8088" },
 *   { id: "node-4", url: "http://127.0.0.1:8089" },
 * ]);
 * keys.get("node-1")!.privateKey; // this node's PLEXUS_PBFT_PRIVATE_KEY
 * ```
 */
export function writePbftClusterConfig(
  dir: string,
  nodes: { id: string; url: string }[],
): { configFile: string; keys: Map<string, PbftNodeKey> } {
  if (nodes.length < 4) {
    throw new RangeError(
      `pbft needs at least 4 nodes (3f + 1 with f = 1), got ${nodes.length}`,
    );
  }
  const keys = new Map<string, PbftNodeKey>();
  for (const n of nodes) {
    const file = join(dir, n.id, "pbft-key.json");
    let key: PbftNodeKey;
    try {
      key = JSON.parse(Deno.readTextFileSync(file));
      const seed = Uint8Array.fromBase64(key.privateKey, {
        alphabet: "base64url",
      });
      if (b64url(ed25519.getPublicKey(seed)) !== key.publicKey) {
        throw new Error("its publicKey is not the one of its privateKey");
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        throw new Error(
          `cluster: ${file} is not a PBFT key pair (${
            (err as Error).message
          }); remove it to make a new one (and the node's data dir: its log holds what the old key signed)`,
        );
      }
      const seed = ed25519.utils.randomSecretKey();
      key = {
        publicKey: b64url(ed25519.getPublicKey(seed)),
        privateKey: b64url(seed),
      };
      Deno.mkdirSync(join(dir, n.id), { recursive: true });
      Deno.writeTextFileSync(file, JSON.stringify(key) + "\n", { mode: 0o600 });
    }
    keys.set(n.id, key);
  }
  const configFile = join(dir, "pbft.json");
  const config = {
    pluginConfig: {
      pbft: {
        members: nodes.map((n) => ({
          id: n.id,
          url: n.url,
          publicKey: keys.get(n.id)!.publicKey,
        })),
      },
    },
  };
  Deno.writeTextFileSync(configFile, JSON.stringify(config, null, 2) + "\n");
  return { configFile, keys };
}

/** A running local cluster. */
export interface LocalCluster {
  readonly urls: string[];
  /** SIGTERM to every child still running, once: a second one would skip its drain. */
  stop(): void;
  /** SIGKILL to every child still running. */
  kill(): void;
  /** Resolves when every child has exited: whether all exited 0. */
  readonly done: Promise<boolean>;
}

/** Deno permissions of a node: those of `deno task start`, writes limited to its dirs. */
function nodePermissions(dataDir: string, kv: string): string[] {
  const writes = [dataDir];
  if (!/^https?:/.test(kv) && kv !== ":memory:") {
    writes.push(kv, `${kv}-shm`, `${kv}-wal`);
  }
  return [
    "--allow-net",
    "--allow-read",
    `--allow-write=${writes.join(",")}`,
    "--allow-env",
    "--allow-import",
  ];
}

/**
 * This Deno's executable if we may run it, else `deno` from PATH (what
 * `--allow-run=deno` grants: it resolves the name, which for an npm install
 * is a symlink, not the executable's own path).
 *
 * @example Usage
 * ```ts ignore
 * import { denoCommand } from "./local_cluster.ts";
 * new Deno.Command(denoCommand(), { args: ["--version"] }).spawn();
 * ```
 */
export function denoCommand(): string {
  const exec = Deno.execPath();
  const q = Deno.permissions.querySync({ name: "run", command: exec });
  return q.state === "granted" ? exec : "deno";
}

/**
 * Starts the nodes (it does not wait for them to listen).
 *
 * @example Usage
 * ```ts ignore
 * import { startLocalCluster } from "./local_cluster.ts";
 * const c = startLocalCluster({ nodes: 3, consensus: "kv-lease", script: "main.ts" });
 * c.urls; // ["http://127.0.0.1:8086", "http://127.0.0.1:8087", "http://127.0.0.1:8088"]
 * c.stop();
 * await c.done;
 * ```
 */
export function startLocalCluster(options: LocalClusterOptions): LocalCluster {
  const port = options.port ?? 8086;
  const host = options.host ?? "127.0.0.1";
  const dir = options.dataDir ?? "./data/cluster";
  const kv = options.kv ?? join(dir, "cluster.kv");
  const say = options.say ?? ((l: string) => console.error(l));
  Deno.mkdirSync(dir, { recursive: true });
  const urls = Array.from(
    { length: options.nodes },
    (_, i) => `http://${host}:${port + i}`,
  );
  // One cluster secret for node-to-node links (websocket-mesh, raft).
  const secret = Deno.env.get("PLEXUS_MESH_SECRET") ??
    crypto.randomUUID().replaceAll("-", "");
  const ids = urls.map((_, i) => `node-${i + 1}`);
  const pbft = options.consensus === "pbft"
    ? writePbftClusterConfig(dir, ids.map((id, i) => ({ id, url: urls[i] })))
    : undefined;
  const children = urls.map((url, i) => {
    const id = `node-${i + 1}`;
    const nodeDir = join(dir, id);
    Deno.mkdirSync(nodeDir, { recursive: true });
    const peers = urls.filter((u) => u !== url);
    const args = [
      "run",
      V8_FLAGS_ARG,
      ...nodePermissions(dir, kv),
      options.script,
      "serve",
      "--node-id",
      id,
      "--host",
      host,
      "--port",
      String(port + i),
      "--data-dir",
      nodeDir,
      "--kv",
      kv,
      "--consensus",
      options.consensus,
      ...(peers.length ? ["--peers", peers.join(",")] : []),
      ...(options.extraArgs ?? []),
    ];
    const child = new Deno.Command(denoCommand(), {
      args,
      env: {
        PLEXUS_MESH_SECRET: secret,
        ...(pbft
          ? {
            PLEXUS_CONFIG: pbft.configFile,
            PLEXUS_PBFT_PRIVATE_KEY: pbft.keys.get(id)!.privateKey,
          }
          : {}),
      },
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
      // Own process group: a terminal's Ctrl-C reaches only this process,
      // which stops each node once (a second signal would skip its drain).
      detached: true,
    }).spawn();
    const exited = child.status.then((s) => {
      say(
        `cluster: ${id} (pid ${child.pid}) exited ${
          s.signal ? `on ${s.signal}` : `with code ${s.code}`
        }`,
      );
      return s.success;
    });
    return { id, child, exited, running: true, stopped: false };
  });
  for (const c of children) c.exited.then(() => (c.running = false));
  say(
    `cluster: ${options.nodes} nodes (${options.consensus}) ${
      children.map((c, i) => `${c.id}=${urls[i]} pid ${c.child.pid}`).join(
        ", ",
      )
    }; shared KV ${kv}${
      pbft ? `; PBFT members and public keys in ${pbft.configFile}` : ""
    }`,
  );
  const send = (signal: Deno.Signal) => {
    for (const c of children) {
      if (!c.running || (signal === "SIGTERM" && c.stopped)) continue;
      c.stopped = true;
      try {
        c.child.kill(signal);
      } catch { /* already exited */ }
    }
  };
  return {
    urls,
    stop: () => send("SIGTERM"),
    kill: () => send("SIGKILL"),
    done: Promise.all(children.map((c) => c.exited)).then((ok) =>
      ok.every(Boolean)
    ),
  };
}
