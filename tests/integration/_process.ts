/**
 * Spawns real `deno run ... main.ts` processes for the integration tests,
 * with the same least-privilege permissions as the `start` task (writes only
 * to a fresh temporary data folder), and watches their JSON log lines.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createJwtAuthority } from "../../core/security/jwt.ts";
import { loadNodeKey, NODE_KEY_FILE } from "../../core/security/node_key.ts";
import type { Role } from "../../core/security/roles.ts";

/** The repository root (where deno.json and main.ts live). */
export const REPO: string = fileURLToPath(new URL("../../", import.meta.url));
/** Absolute path of main.ts. */
export const MAIN: string = join(REPO, "main.ts");
/** Absolute path of the fixtures folder. */
export const FIXTURES: string = fileURLToPath(
  new URL("../fixtures/", import.meta.url),
);

/** Readiness and exit waits are generous: CI machines may be slow and busy. */
export const START_TIMEOUT_MS = 90_000;
export const EXIT_TIMEOUT_MS = 60_000;

/** One parsed stdout JSON log line. */
export interface LogLine {
  ts?: string;
  level?: string;
  msg: string;
  [field: string]: unknown;
}

/** Options for {@linkcode spawnPlexus}. */
export interface SpawnOptions {
  /** Arguments after `main.ts`, on top of the defaults below. */
  args?: string[];
  /** Add `--port 0 --data-dir DIR --kv DIR/plexus.kv --plugins-dir ...`. @default {true} */
  defaults?: boolean;
  /** The `--port` value among the defaults; `false` leaves the flag out. @default {"0"} */
  port?: string | false;
  /** Drop-in folder; by default an empty folder inside the data dir. */
  pluginsDir?: string;
  /** Extra environment (PLEXUS_* of the parent are never inherited). */
  env?: Record<string, string>;
  /** Extra `deno run` flags, e.g. `--cert ca.pem`. */
  denoFlags?: string[];
  /** Extra folders the node may write to (besides its data dir). */
  allowWrite?: string[];
  /** Use this (caller-made) temp folder as data dir; removed on close. */
  dir?: string;
  /** Start the node under `ulimit -n` of this many open files. */
  fileLimit?: number;
}

/** Races `promise` against a timer; the error names `what`. */
export function deadline<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)),
      ms,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function childEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    if (!k.startsWith("PLEXUS_")) env[k] = v;
  }
  env.NO_COLOR = "1";
  return { ...env, ...extra };
}

interface Waiter {
  pred: (line: LogLine) => boolean;
  resolve: (line: LogLine) => void;
  reject: (err: Error) => void;
}

/** A running (or finished) plexus process. */
export class PlexusProcess {
  readonly child: Deno.ChildProcess;
  /** Temporary data dir; removed by {@linkcode close}. */
  readonly dir: string;
  /** Raw stdout lines. */
  readonly lines: string[] = [];
  /** Stdout lines that parsed as JSON objects. */
  readonly records: LogLine[] = [];
  /** Everything written to stderr so far. */
  stderr = "";
  /** Base URL once the node logged that it listens. */
  url = "";
  readonly status: Promise<Deno.CommandStatus>;
  #waiters = new Set<Waiter>();
  #readers: Promise<void>;
  #eof = false;
  exited = false;

  constructor(child: Deno.ChildProcess, dir: string) {
    this.child = child;
    this.dir = dir;
    this.status = child.status.then((s) => {
      this.exited = true;
      return s;
    });
    this.#readers = Promise.all([
      this.#readStdout(),
      this.#readStderr(),
    ]).then(() => {});
  }

  async #readStdout(): Promise<void> {
    let rest = "";
    const decoder = new TextDecoder();
    for await (const chunk of this.child.stdout) {
      rest += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = rest.indexOf("\n")) >= 0) {
        this.#line(rest.slice(0, nl));
        rest = rest.slice(nl + 1);
      }
    }
    rest += decoder.decode();
    if (rest) this.#line(rest);
    this.#eof = true;
    for (const w of this.#waiters) {
      w.reject(
        new Error(
          `plexus stdout closed before the expected log line; stderr:\n${this.stderr}`,
        ),
      );
    }
    this.#waiters.clear();
  }

  async #readStderr(): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of this.child.stderr) {
      this.stderr += decoder.decode(chunk, { stream: true });
    }
    this.stderr += decoder.decode();
  }

  #line(text: string): void {
    this.lines.push(text);
    let rec: unknown;
    try {
      rec = JSON.parse(text);
    } catch {
      return;
    }
    if (rec === null || typeof rec !== "object" || Array.isArray(rec)) return;
    const line = rec as LogLine;
    this.records.push(line);
    for (const w of this.#waiters) {
      if (w.pred(line)) {
        this.#waiters.delete(w);
        w.resolve(line);
      }
    }
  }

  /** Resolves with the first (past or future) stdout record matching `pred`. */
  waitForLog(
    pred: (line: LogLine) => boolean,
    what: string,
    timeoutMs = START_TIMEOUT_MS,
  ): Promise<LogLine> {
    const seen = this.records.find(pred);
    if (seen) return Promise.resolve(seen);
    if (this.#eof) {
      return Promise.reject(
        new Error(
          `plexus exited without logging ${what}; stderr:\n${this.stderr}`,
        ),
      );
    }
    let waiter!: Waiter;
    const p = new Promise<LogLine>((resolve, reject) => {
      waiter = { pred, resolve, reject };
      this.#waiters.add(waiter);
    });
    return deadline(p, timeoutMs, what).catch((err) => {
      this.#waiters.delete(waiter);
      throw err;
    });
  }

  /** Whether a stdout record with this exact `msg` was logged. */
  logged(msg: string): boolean {
    return this.records.some((r) => r.msg === msg);
  }

  /** Sends a signal unless the process already exited. */
  signal(sig: Deno.Signal): void {
    if (this.exited) return;
    try {
      this.child.kill(sig);
    } catch (err) {
      if (!(err instanceof TypeError)) throw err; // already gone
    }
  }

  /** Waits for exit and for stdout/stderr to be fully read. */
  async exit(timeoutMs = EXIT_TIMEOUT_MS): Promise<Deno.CommandStatus> {
    const status = await deadline(this.status, timeoutMs, "plexus to exit");
    await deadline(this.#readers, timeoutMs, "plexus output to close");
    return status;
  }

  /** Kills the process if still running, waits for it and removes its data dir. */
  async close(): Promise<void> {
    try {
      if (!this.exited) {
        this.signal("SIGKILL");
      }
      await this.status;
      await this.#readers;
    } finally {
      await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    }
  }

  /** `fetch` relative to the node's URL. */
  fetch(path: string, init?: RequestInit): Promise<Response> {
    return fetch(new URL(path, this.url), init);
  }

  #tokens = new Map<Role, Promise<string>>();
  /**
   * A token for `role` signed with this node's key (read from its data dir,
   * as `plexus token` does): valid on every node sharing its KV.
   */
  token(role: Role = "admin"): Promise<string> {
    let t = this.#tokens.get(role);
    if (!t) {
      t = loadNodeKey(join(this.dir, NODE_KEY_FILE)).then((key) =>
        createJwtAuthority(key).issue("it", role, { ttl: "1h" })
      );
      this.#tokens.set(role, t);
    }
    return t;
  }

  /** {@linkcode fetch} with a Bearer token for `role` (default admin). */
  async api(
    path: string,
    init: RequestInit = {},
    role: Role = "admin",
  ): Promise<Response> {
    const headers = new Headers(init.headers);
    headers.set("authorization", `Bearer ${await this.token(role)}`);
    const res = await fetch(new URL(path, this.url), { ...init, headers });
    if (res.status === 500) await this.#reportServerError(path);
    return res;
  }

  /**
   * Prints the node's "unhandled error" log line for a 500 answer (what the
   * app answers an error nothing handled), so a test failing on the status
   * shows why the node failed, not only that it did.
   */
  async #reportServerError(path: string): Promise<void> {
    const line = await this.waitForLog(
      (l) =>
        l.msg === "unhandled error" && l.path === path.split("?")[0] &&
        !this.#reported.has(l),
      "the unhandled error",
      2_000,
    ).catch(() => undefined);
    if (!line) return;
    this.#reported.add(line);
    console.error(
      `plexus ${this.url} answered ${path} with 500:`,
      JSON.stringify(line),
    );
  }
  #reported = new WeakSet<LogLine>();
}

/**
 * Spawns `deno run --allow-net --allow-read --allow-write=DIR --allow-env
 * --allow-import main.ts ARGS` in the repository root with a fresh temporary
 * data dir. Does not wait for readiness.
 */
export async function spawnPlexus(
  options: SpawnOptions = {},
): Promise<PlexusProcess> {
  const dir = options.dir ??
    await Deno.makeTempDir({ prefix: "plexus-it-" });
  const writable = [dir, ...(options.allowWrite ?? [])].join(",");
  // The child records what it imports (npm: packages, https: plugins) in a
  // lockfile; give it a private copy so tests never rewrite the repo's.
  const lock = join(dir, "deno.lock");
  try {
    await Deno.copyFile(join(REPO, "deno.lock"), lock);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const args = [
    "run",
    `--lock=${lock}`,
    "--allow-net",
    "--allow-read",
    `--allow-write=${writable}`,
    "--allow-env",
    "--allow-import",
    ...(options.denoFlags ?? []),
    MAIN,
  ];
  if (options.defaults ?? true) {
    const port = options.port ?? "0";
    if (port !== false) args.push("--port", port);
    args.push(
      "--data-dir",
      dir,
      "--kv",
      join(dir, "plexus.kv"),
      "--plugins-dir",
      options.pluginsDir ?? join(dir, "plugins.d"),
    );
  }
  args.push(...(options.args ?? []));
  // Under a file limit: `bash -c 'ulimit -n N && exec deno ...'`.
  const [cmd, cmdArgs] = options.fileLimit === undefined
    ? [Deno.execPath(), args]
    : ["bash", [
      "-c",
      'ulimit -n "$0" && exec "$@"',
      String(options.fileLimit),
      Deno.execPath(),
      ...args,
    ]];
  const child = new Deno.Command(cmd, {
    args: cmdArgs,
    cwd: REPO,
    env: childEnv(options.env),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return new PlexusProcess(child, dir);
}

/**
 * Spawns a node and waits until it logs `plexus listening on URL`.
 * On failure the process is cleaned up and the error carries its stderr.
 */
export async function startPlexus(
  options: SpawnOptions = {},
): Promise<PlexusProcess> {
  const p = await spawnPlexus(options);
  try {
    const line = await p.waitForLog(
      (r) => typeof r.url === "string" && r.msg.startsWith("plexus listening"),
      "the 'plexus listening' log line",
    );
    const url = line.url as string;
    if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(url)) {
      throw new Error(`unexpected listen url ${url}`);
    }
    p.url = url;
    return p;
  } catch (err) {
    await p.close();
    throw err;
  }
}

/** Result of a process that ran to completion. */
export interface Finished {
  code: number;
  stdout: string;
  stderr: string;
  records: LogLine[];
}

/** Spawns plexus and waits for it to exit on its own (bad flags, bad plugins). */
export async function runToExit(
  options: SpawnOptions = {},
  timeoutMs = EXIT_TIMEOUT_MS + START_TIMEOUT_MS,
): Promise<Finished> {
  const p = await spawnPlexus(options);
  try {
    const status = await p.exit(timeoutMs);
    return {
      code: status.code,
      stdout: p.lines.join("\n"),
      stderr: p.stderr,
      records: p.records,
    };
  } finally {
    await p.close();
  }
}

/**
 * `deno run --lock=COPY PERMISSIONS main.ts ARGS` in the repository root
 * with only the given permissions (for subcommands other than `serve`),
 * stdout and stderr piped.
 */
export async function spawnMain(
  dir: string,
  permissions: string[],
  args: string[],
): Promise<Deno.ChildProcess> {
  // A private lockfile copy, so the child never rewrites the repo's.
  const lock = join(dir, "deno.lock");
  await Deno.copyFile(join(REPO, "deno.lock"), lock).catch(() => {});
  return new Deno.Command(Deno.execPath(), {
    args: ["run", `--lock=${lock}`, ...permissions, MAIN, ...args],
    cwd: REPO,
    env: childEnv(),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Runs a `main.ts` subcommand (see {@linkcode spawnMain}) to its end. */
export async function runMain(
  dir: string,
  permissions: string[],
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = await spawnMain(dir, permissions, args);
  const out = await deadline(
    child.output(),
    EXIT_TIMEOUT_MS,
    `plexus ${args.join(" ")}`,
  );
  const text = new TextDecoder();
  return {
    code: out.code,
    stdout: text.decode(out.stdout),
    stderr: text.decode(out.stderr),
  };
}

/** Writes a JSON config file into `dir` and returns its path. */
export async function writeConfig(
  dir: string,
  config: unknown,
  name = "config.json",
): Promise<string> {
  const path = join(dir, name);
  await Deno.writeTextFile(path, JSON.stringify(config));
  return path;
}

/** Polls `check` until it returns a truthy value. */
export async function poll<T>(
  check: () => Promise<T | undefined | false> | T | undefined | false,
  what: string,
  timeoutMs = START_TIMEOUT_MS,
  everyMs = 50,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  while (true) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The source of a dependency-free plugin (plain object default export). */
export function plainPluginSource(name: string): string {
  return `// generated by the plexus integration tests
export default {
  manifest: {
    name: ${JSON.stringify(name)},
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: [${JSON.stringify(`extension:${name}`)}],
  },
  setup(ctx) {
    ctx.http.get("/whoami", (c) => c.json({ name: ctx.name, url: import.meta.url }));
    return Promise.resolve({ stop: () => Promise.resolve() });
  },
};
`;
}

/**
 * A base port B with B … B+n−1 free on loopback right now (and, with
 * `alsoAbove`, the same ports plus `alsoAbove`: gossip listens on the HTTP
 * port + 1000). For nodes started on consecutive ports.
 */
export function freePortRange(
  n: number,
  options: { alsoAbove?: number } = {},
): number {
  const offsets = Array.from({ length: n }, (_, i) => i);
  if (options.alsoAbove) {
    offsets.push(...offsets.map((i) => i + options.alsoAbove!));
  }
  for (let tries = 0; tries < 100; tries++) {
    const base = 20_000 + Math.floor(Math.random() * 30_000);
    const held: Deno.Listener[] = [];
    try {
      for (const o of offsets) {
        held.push(Deno.listen({ hostname: "127.0.0.1", port: base + o }));
      }
      return base;
    } catch {
      // taken: try another range
    } finally {
      for (const l of held) l.close();
    }
  }
  throw new Error(`no ${n} free consecutive loopback ports`);
}

/** A loopback port free right now (e.g. for a node restarted on the same port). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A running `plexus cluster` process (see {@linkcode spawnCluster}). */
export interface ClusterProcess extends AsyncDisposable {
  /** Its temp dir; node `node-i` keeps its data in `DIR/c/node-i`. */
  readonly dir: string;
  /** Its stderr so far: the start line with pids, exit reports. */
  readonly stderr: string;
  /** The pid of node `node-i`, from the start line. */
  pidOf(nodeId: string): number;
  /** Sends `signal`, waits for the exit and the end of stderr. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

/**
 * Waits until every one of `urls` answers `GET /health` with 200.
 *
 * @example Usage
 * ```ts ignore
 * await waitHealthy(["http://127.0.0.1:8086", "http://127.0.0.1:8087"]);
 * ```
 */
export async function waitHealthy(urls: string[]): Promise<void> {
  await poll(async () => {
    try {
      return (await Promise.all(urls.map((u) => fetch(`${u}/health`))))
        .every((r) => (r.body?.cancel(), r.status === 200));
    } catch {
      return false;
    }
  }, `${urls.length} healthy nodes`);
}

/**
 * An `Authorization` header with a 1-hour token of `role` minted by
 * `plexus token` with the key in `nodeDir` (a `plexus cluster` node's data
 * dir), run in `dir`.
 *
 * @example Usage
 * ```ts ignore
 * const auth = await clusterAuth(dir, join(dir, "c", "node-1"), "analyst");
 * await fetch(url, { headers: auth });
 * ```
 */
export async function clusterAuth(
  dir: string,
  nodeDir: string,
  role: string,
): Promise<{ authorization: string }> {
  const tok = await runMain(dir, [
    "--allow-read",
    "--allow-env",
    `--allow-write=${dir}`,
  ], [
    "token",
    "--role",
    role,
    "--ttl",
    "1h",
    "--sub",
    "test",
    "--data-dir",
    nodeDir,
  ]);
  if (tok.code !== 0) {
    throw new Error(`plexus token exited ${tok.code}: ${tok.stderr}`);
  }
  return { authorization: `Bearer ${tok.stdout.trim()}` };
}

/**
 * Runs `main.ts cluster ARGS` in a fresh temp dir (nodes' data under
 * `DIR/c`), with only the permissions `deno task cluster` has; disposing
 * kills it and removes the dir.
 */
export async function spawnCluster(args: string[]): Promise<ClusterProcess> {
  const dir = await Deno.makeTempDir({ prefix: "plexus-cluster-" });
  const child = await spawnMain(dir, [
    "--allow-run=deno",
    "--allow-read",
    "--allow-env",
    `--allow-write=${dir}`,
  ], ["cluster", "--data-dir", join(dir, "c"), ...args]);
  const stdout = child.stdout.cancel();
  let err = "";
  const reading = (async () => {
    for await (
      const chunk of child.stderr.pipeThrough(new TextDecoderStream())
    ) {
      err += chunk;
    }
  })();
  const stop = async (signal: Deno.Signal = "SIGTERM") => {
    try {
      child.kill(signal);
    } catch { /* exited */ }
    const status = await child.status;
    await reading;
    return status;
  };
  let exited = false;
  child.status.then(() => (exited = true));
  return {
    dir,
    get stderr() {
      return err;
    },
    pidOf(nodeId) {
      const m = new RegExp(`${nodeId}=http://[^ ]+ pid (\\d+)`).exec(err);
      if (!m) throw new Error(`no pid for ${nodeId} in: ${err}`);
      return Number(m[1]);
    },
    stop,
    async [Symbol.asyncDispose]() {
      // SIGTERM first: its nodes run in their own process groups and would
      // outlive a SIGKILLed cluster process.
      if (!exited) {
        try {
          child.kill("SIGTERM");
        } catch { /* exited */ }
        await deadline(child.status, EXIT_TIMEOUT_MS, "plexus cluster to exit")
          .catch(() => {});
      }
      await stop("SIGKILL");
      await stdout.catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
