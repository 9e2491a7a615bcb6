/**
 * Reloads a plugin when its files change (`deno task dev`): each plugin
 * loaded from a local file is watched — its file, or its folder when it is
 * a folder plugin's `mod.ts` — and a change, once the writes settle, hot
 * swaps it (`NodeHandle.reload`). A refused new version is logged and the
 * old one keeps serving, so a half-saved file costs nothing.
 *
 * @module
 */
import { basename, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "./observe/logger.ts";

/** Options of {@linkcode watchPlugins}. */
export interface WatchOptions {
  /** Hot swaps the named plugin. */
  reload(name: string): Promise<{ from: string; to: string }>;
  /** Where reloads and refusals are logged. */
  log: Logger;
  /** Quiet time after the last change before reloading, ms. @default {150} */
  settleMs?: number;
}

/** A running plugin watch. */
export interface PluginWatch {
  /** Stops watching. */
  close(): void;
  /** Resolves after the reload a change started has finished (for tests). */
  settled(): Promise<void>;
}

/**
 * Watches the local plugin files among `specs` (plugin name → specifier as
 * loaded) and reloads a plugin when its files change.
 *
 * @example Usage
 * ```ts ignore
 * const watch = watchPlugins(new Map([["hello", "file:///srv/plugins.d/hello.ts"]]), {
 *   reload: node.reload,
 *   log: node.log,
 * });
 * watch.close();
 * ```
 */
export function watchPlugins(
  specs: ReadonlyMap<string, string>,
  options: WatchOptions,
): PluginWatch {
  const { reload, log, settleMs = 150 } = options;
  // The path each plugin is known by: its folder for a folder plugin.
  const roots = new Map<string, string>();
  for (const [name, spec] of specs) {
    if (!spec.startsWith("file:")) continue;
    const file = fileURLToPath(spec);
    roots.set(name, basename(file) === "mod.ts" ? dirname(file) : file);
  }
  const timers = new Map<string, ReturnType<typeof setTimeout>>();
  let running: Promise<void> = Promise.resolve();
  const ownerOf = (path: string): string | undefined => {
    for (const [name, root] of roots) {
      if (path === root || path.startsWith(root + "/")) return name;
    }
  };
  const schedule = (name: string) => {
    clearTimeout(timers.get(name));
    timers.set(
      name,
      setTimeout(() => {
        timers.delete(name);
        // One reload at a time, in the order the changes settled.
        running = running.then(async () => {
          try {
            const r = await reload(name);
            log.info(`plugin ${name} reloaded: ${r.from} -> ${r.to}`, {
              plugin: name,
              ...r,
            });
          } catch (err) {
            log.error(
              `plugin ${name} changed, but the new version was refused; the old one keeps serving`,
              { plugin: name, error: err },
            );
          }
        });
      }, settleMs),
    );
  };
  const paths = [...new Set([...roots.values()].map((r) => dirname(r)))];
  const watcher = paths.length ? Deno.watchFs(paths) : undefined;
  (async () => {
    if (!watcher) return;
    try {
      for await (const event of watcher) {
        if (event.kind === "access") continue;
        for (const path of event.paths) {
          const name = ownerOf(path);
          if (name) schedule(name);
        }
      }
    } catch (err) {
      log.error("plugin file watch failed; reload by POST instead", {
        error: err,
      });
    }
  })();
  return {
    close() {
      for (const t of timers.values()) clearTimeout(t);
      timers.clear();
      try {
        watcher?.close();
      } catch { /* closed already */ }
    },
    async settled() {
      while (timers.size > 0) {
        await new Promise((r) => setTimeout(r, settleMs));
      }
      await running;
    },
  };
}
