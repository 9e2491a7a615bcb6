/**
 * Several real plexus processes sharing one Deno KV: a local file (one
 * machine) or a denokv server over KV Connect (DENO_KV_URL, many machines).
 *
 * @module
 */
import { join } from "node:path";
import { type PlexusProcess, startPlexus } from "../integration/_process.ts";
import { openStore } from "../../core/state/store.ts";
import type { QueueMessage } from "../../core/state/queue.ts";
import type { TaskBody } from "../../core/tasks.ts";

/** Where the nodes keep shared state. */
export interface KvTarget {
  name: string;
  /** Returns the `--kv` value and a cleanup; null when unavailable (with why). */
  open(
    dir: string,
  ): Promise<{ spec: string; env: Record<string, string> } | { skip: string }>;
}

/** A local file shared by every process. */
export const fileTarget: KvTarget = {
  name: "shared KV file",
  open: (dir) => Promise.resolve({ spec: join(dir, "shared.kv"), env: {} }),
};

/** A denokv server (from `deno task services`), wiped before each test. */
export const denokvTarget: KvTarget = {
  name: "denokv over KV Connect",
  async open() {
    const url = Deno.env.get("DENO_KV_URL");
    const token = Deno.env.get("DENO_KV_ACCESS_TOKEN");
    if (!url || !token) {
      return {
        skip:
          'DENO_KV_URL and DENO_KV_ACCESS_TOKEN are not set (run: eval "$(deno task services)")',
      };
    }
    const kv = await Deno.openKv(url);
    try {
      // One denokv serves every test: start from an empty keyspace.
      for (;;) {
        const keys: Deno.KvKey[] = [];
        for await (const e of kv.list({ prefix: [] }, { limit: 500 })) {
          keys.push(e.key);
        }
        if (keys.length === 0) break;
        for (let i = 0; i < keys.length; i += 100) {
          const op = kv.atomic();
          for (const k of keys.slice(i, i + 100)) op.delete(k);
          await op.commit();
        }
      }
    } finally {
      kv.close();
    }
    return { spec: url, env: { DENO_KV_ACCESS_TOKEN: token } };
  },
};

/** Both targets; the denokv one is skipped (or fails under PLEXUS_REQUIRE_SERVICES=1) without a server. */
export const KV_TARGETS: KvTarget[] = [fileTarget, denokvTarget];

/** A cluster of nodes sharing one KV, and the test's own handle on that KV. */
export interface Cluster extends AsyncDisposable {
  nodes: PlexusProcess[];
  kv: Deno.Kv;
  dir: string;
  spec: string;
  /** Starts one more node (id `n{index}`). */
  add(extraArgs?: string[]): Promise<PlexusProcess>;
}

/** Options for {@linkcode startCluster}. */
export interface ClusterOptions {
  nodes: number;
  /** Extra arguments for every node. */
  args?: string[];
  /** Written to a config file every node loads. */
  config?: Record<string, unknown>;
}

/**
 * Starts `nodes` nodes on `target`. Returns null (after printing why) when
 * the target is unavailable and services are not required.
 */
export async function startCluster(
  target: KvTarget,
  options: ClusterOptions,
): Promise<Cluster | null> {
  const dir = await Deno.makeTempDir({ prefix: "plexus-cluster-" });
  const opened = await target.open(dir);
  if ("skip" in opened) {
    await Deno.remove(dir, { recursive: true });
    if (Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1") {
      throw new Error(
        `${target.name} required (PLEXUS_REQUIRE_SERVICES=1) but ${opened.skip}`,
      );
    }
    console.log(`ignored on ${target.name}: ${opened.skip}`);
    return null;
  }
  const configFile = join(dir, "config.json");
  await Deno.writeTextFile(configFile, JSON.stringify(options.config ?? {}));
  const nodes: PlexusProcess[] = [];
  const add = async (extraArgs: string[] = []) => {
    const id = `n${nodes.length + 1}`;
    const node = await startPlexus({
      args: [
        "--kv",
        opened.spec,
        "--node-id",
        id,
        "--config",
        configFile,
        ...(options.args ?? []),
        ...extraArgs,
      ],
      allowWrite: [dir],
      env: opened.env,
    });
    nodes.push(node);
    return node;
  };
  const kv = await openStore(opened.spec);
  try {
    for (let i = 0; i < options.nodes; i++) await add();
  } catch (err) {
    await Promise.all(nodes.map((n) => n.close()));
    kv.close();
    throw err;
  }
  return {
    nodes,
    kv,
    dir,
    spec: opened.spec,
    add,
    async [Symbol.asyncDispose]() {
      await Promise.all(nodes.map((n) => n.close()));
      kv.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** Polls `fn` until `ok`, failing with `what` and the last value after `ms`. */
export async function eventually<T>(
  fn: () => Promise<T>,
  ok: (v: T) => boolean,
  what: string,
  ms = 60_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: T | undefined;
  for (;;) {
    try {
      last = await fn();
      if (ok(last)) return last;
    } catch (err) {
      // A node busy or restarting answers late; keep polling until the deadline.
      last = String(err) as T;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${ms} ms waiting for ${what}; last: ${
          JSON.stringify(last)
        }`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Every message of the `tasks` queue as stored, whatever its state. */
export async function allTasks(
  kv: Deno.Kv,
): Promise<QueueMessage<TaskBody>[]> {
  const out: QueueMessage<TaskBody>[] = [];
  for await (
    const e of kv.list<QueueMessage<TaskBody>>({
      prefix: ["queue", "tasks", "msg"],
    })
  ) out.push(e.value);
  return out;
}
