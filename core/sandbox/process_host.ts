/**
 * The `process` sandbox level: the plugin runs in a child `deno run` with
 * `--no-prompt`, one `--allow-*` flag per permission it was granted (never
 * `-A`) and a V8 heap cap, talking to the node over stdin/stdout
 * (`stdio_port.ts`). Unlike a Worker, the child cannot exhaust the node's
 * memory (it dies at its heap cap) or block the node's event loop, and the
 * node can kill it. Everything else, the context proxy and the restart
 * policy, is the Worker level's (`worker_host.ts`): this module only starts
 * and ends the child.
 *
 * The node needs `--allow-run` for the `deno` executable to use this level.
 *
 * @module
 */
import { streamPort } from "./stdio_port.ts";
import type { Launched, Launcher } from "./worker_host.ts";

const ENTRY_PORT = new URL("./process_entry.ts", import.meta.url).href;
const WORKER_MAIN = new URL("./worker_main.ts", import.meta.url).href;
/** The import map and lockfile the node itself runs with. */
const CONFIG = new URL("../../deno.json", import.meta.url);

/** Options of {@linkcode processLauncher}. */
export interface ProcessLauncherOptions {
  /** The child's permission flags (`denoFlags` in `permissions.ts`). */
  flags: string[];
  /** The child's V8 heap cap, MiB. @default {128} */
  heapMb?: number;
  /** The child's environment (it starts with nothing else). @default {{}} */
  env?: Record<string, string>;
  /** Told each line the child writes to stderr (its console output). */
  onStderr?: (line: string) => void;
}

/**
 * Starts each sandbox as a child `deno run` of the plugin at its URL.
 *
 * @example Usage
 * ```ts ignore
 * const sandbox = await openWorkerSandbox(url, {
 *   permissions: workerPermissions(effective, url),
 *   launcher: processLauncher({ flags: denoFlags(effective, url), heapMb: 64 }),
 * });
 * ```
 */
export function processLauncher(options: ProcessLauncherOptions): Launcher {
  const heapMb = options.heapMb ?? 128;
  return (pluginUrl): Launched => {
    // The entry is the child's main module: its static imports (the port,
    // the inside, the plugin) load without read permission.
    const entry = [
      `import ${JSON.stringify(ENTRY_PORT)};`,
      `import ${JSON.stringify(WORKER_MAIN)};`,
      `import * as mod from ${JSON.stringify(pluginUrl)};`,
      `globalThis.__plexusPluginReady(mod);`,
    ].join("\n");
    for (const f of options.flags) {
      if (f === "-A" || f.startsWith("--allow-all")) {
        throw new Error(`refusing to start a sandbox with ${f}`);
      }
    }
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--quiet",
        `--config=${CONFIG.pathname}`,
        "--unstable-kv",
        `--v8-flags=--max-old-space-size=${heapMb}`,
        ...options.flags,
        `data:application/javascript,${encodeURIComponent(entry)}`,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      // Its own process group: a Ctrl-C meant for the node (the terminal
      // signals the whole foreground group) must not kill the plugin before
      // the node has drained it. It still ends with the node: it exits when
      // its stdin closes, as it does when the node dies.
      detached: true,
      clearEnv: true,
      // Deno's own cache folder, so an npm: plugin runs from the copy the
      // node checked against its pin (integrity.ts); the plugin cannot read
      // it without an env grant.
      env: { ...options.env, ...denoDirEnv(), NO_COLOR: "1" },
    }).spawn();
    let exit: ((why: string) => void) | undefined;
    let ended = false;
    const end = (why: string) => {
      if (ended) return;
      ended = true;
      exit?.(why);
    };
    const exited = child.status.then((s) =>
      s.signal
        ? `the plugin's process was killed by ${s.signal}`
        : `the plugin's process exited with code ${s.code}`
    );
    // Its stdout ends as it dies: report how it died, when that comes soon.
    const port = streamPort(child.stdout, child.stdin, (why) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      Promise.race([
        exited,
        new Promise<string>((r) => (timer = setTimeout(() => r(why), 1000))),
      ]).then((reason) => {
        clearTimeout(timer);
        end(reason);
      });
    });
    (async () => {
      let rest = "";
      const decoder = new TextDecoder();
      for await (const chunk of child.stderr) {
        rest += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = rest.indexOf("\n")) >= 0) {
          options.onStderr?.(rest.slice(0, nl));
          rest = rest.slice(nl + 1);
        }
      }
      if (rest) options.onStderr?.(rest);
    })().catch(() => {});
    exited.then(end);
    return {
      port,
      terminate() {
        ended = true;
        try {
          child.kill("SIGKILL");
        } catch {
          // already gone
        }
      },
      onExit(cb) {
        exit = cb;
      },
    };
  };
}

/** `DENO_DIR` as the node has it, when set. */
function denoDirEnv(): Record<string, string> {
  const query = { name: "env", variable: "DENO_DIR" } as const;
  if (Deno.permissions.querySync(query).state !== "granted") return {};
  const dir = Deno.env.get("DENO_DIR");
  return dir ? { DENO_DIR: dir } : {};
}
