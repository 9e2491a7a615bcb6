/**
 * Loads a plugin at the trust level the operator chose for it
 * (`pluginTrust`, `--plugin-trust NAME=LEVEL`): in-process when `trusted`,
 * in its own Worker with exactly its granted permissions when `worker`.
 *
 * The level is keyed by the plugin's name, which only its manifest says, so
 * a plugin that might be sandboxed is first loaded in a Worker with no
 * permissions at all (its top-level code never runs in the node with the
 * node's permissions); that Worker is kept when it already has what the
 * plugin may use, else replaced by one with the effective permissions.
 * Built-ins (`builtin:`) are always trusted.
 *
 * Until the sandbox covers the whole plugin context and the `process` level
 * exists, a plugin without an entry in `pluginTrust` stays `trusted` (see
 * docs/sandbox.md); the sandbox is the operator's opt-in.
 *
 * @module
 */
import { importPlugin, type LoadOptions, resolveSpecifier } from "../loader.ts";
import { PluginError } from "../plugin.ts";
import type { PermissionSpec } from "../plugin.ts";
import type { TrustLevel } from "../config.ts";
import {
  checkGrants,
  denoFlags,
  effectivePermissions,
  workerPermissions,
} from "./permissions.ts";
import { openWorkerSandbox, type WorkerSandbox } from "./worker_host.ts";
import { processLauncher } from "./process_host.ts";
import { SYNCHRONOUS_KINDS } from "./capability_proxy.ts";
import type { Logger } from "../observe/logger.ts";
import { type PinOptions, verifyPluginSource } from "./integrity.ts";

/** The operator's choices {@linkcode loadAtTrust} applies. */
export interface TrustOptions extends LoadOptions {
  /** Level by plugin name. @default {{}} */
  pluginTrust?: Readonly<Record<string, TrustLevel>>;
  /** Permissions granted by plugin name. @default {{}} */
  pluginGrants?: Readonly<Record<string, PermissionSpec>>;
  /** Where a `process` plugin's stderr goes (one record per line). */
  log?: Logger;
  /** Pins, unpinned remote plugins, the data dir for verified copies (the config's fields). @default {{}} */
  pins?: PinOptions;
}

/** A loaded plugin and how it runs. */
export interface TrustedLoad {
  /** The module's default export (or the sandbox's stand-in for it). */
  value: unknown;
  /** The specifier it came from. */
  origin: string;
  /** Where it runs. */
  trust: TrustLevel;
  /** What it may do: all of the node's when trusted, else exactly this. */
  permissions: "all" | Required<PermissionSpec>;
  /** Its Worker, when sandboxed. */
  sandbox?: WorkerSandbox;
}

const NONE: Required<PermissionSpec> = effectivePermissions(undefined, {});

/**
 * Loads `spec` at its operator-chosen trust level. Rejects with a
 * `PluginError` naming the spec when it cannot load, with a
 * `PermissionError` naming every missing grant when the plugin asks for
 * more than it was granted, and refuses the `process` level (not built yet).
 *
 * @example Usage
 * ```ts ignore
 * const loaded = await loadAtTrust("./fetcher.ts", {
 *   pluginTrust: { fetcher: "worker" },
 *   pluginGrants: { fetcher: { net: ["api.example.com"] } },
 * });
 * kernel.register(loaded.value, loaded.origin, { trust: loaded.trust, permissions: loaded.permissions });
 * ```
 */
export async function loadAtTrust(
  spec: string,
  options: TrustOptions = {},
): Promise<TrustedLoad> {
  const trust = options.pluginTrust ?? {};
  const sandboxing = Object.values(trust).some((l) => l !== "trusted");
  const resolved = resolveSpecifier(spec, options);
  // Checked before any of its code runs, in the node or in the probe Worker.
  const target = "builtin" in resolved
    ? resolved
    : { url: await verifyPluginSource(spec, resolved.url, options.pins) };
  if ("builtin" in target || !sandboxing) {
    const { value, origin } = await importPlugin(spec, target, options);
    return { value, origin, trust: "trusted", permissions: "all" };
  }
  const url = target.url;
  let probe: WorkerSandbox;
  try {
    probe = await openWorkerSandbox(url, {
      permissions: workerPermissions(NONE, url),
    });
  } catch (err) {
    throw new PluginError(
      spec,
      "load",
      `cannot load plugin '${spec}': ${(err as Error).message}`,
      { cause: err },
    );
  }
  const name = probe.manifest.name;
  const level: TrustLevel = Object.hasOwn(trust, name)
    ? trust[name]
    : "trusted";
  if (level === "trusted") {
    probe.terminate("trusted: loaded in-process instead");
    const { value, origin } = await importPlugin(spec, target, options);
    return { value, origin, trust: "trusted", permissions: "all" };
  }
  if (SYNCHRONOUS_KINDS.includes(probe.manifest.kind)) {
    probe.terminate("synchronous contract");
    throw new PluginError(
      name,
      "load",
      `plugin '${name}' is a ${probe.manifest.kind}: that contract is synchronous and on the node's hot path, so it cannot be called across a sandbox; run it trusted (pluginTrust: {"${name}": "trusted"}, see docs/sandbox.md)`,
    );
  }
  if (level === "process") {
    const run = Deno.permissions.querySync({
      name: "run",
      command: Deno.execPath(),
    });
    if (run.state !== "granted") {
      probe.terminate("process level refused");
      throw new PluginError(
        name,
        "load",
        `plugin '${name}': trust level 'process' starts a child deno, so the node needs --allow-run=${Deno.execPath()} (see docs/sandbox.md)`,
      );
    }
  }
  let effective: Required<PermissionSpec>;
  try {
    effective = checkGrants(
      name,
      probe.manifest.permissions as PermissionSpec | undefined,
      options.pluginGrants?.[name],
    );
  } catch (err) {
    probe.terminate("grants missing");
    throw err;
  }
  const wanted = workerPermissions(effective, url);
  if (level === "process") {
    probe.terminate("reopened as a process");
    const log = options.log?.child({ plugin: name, stream: "stderr" });
    const sandbox = await open(name, () =>
      openWorkerSandbox(url, {
        permissions: wanted,
        launcher: processLauncher({
          flags: denoFlags(effective, url),
          env: grantedEnv(effective.env),
          onStderr: (line) => log?.warn(line),
        }),
      }));
    return {
      value: sandbox.plugin,
      origin: spec,
      trust: "process",
      permissions: effective,
      sandbox,
    };
  }
  if (JSON.stringify(wanted) === JSON.stringify(workerPermissions(NONE, url))) {
    return {
      value: probe.plugin,
      origin: spec,
      trust: "worker",
      permissions: effective,
      sandbox: probe,
    };
  }
  probe.terminate("reopened with the plugin's permissions");
  const sandbox = await open(
    name,
    () => openWorkerSandbox(url, { permissions: wanted }),
  );
  return {
    value: sandbox.plugin,
    origin: spec,
    trust: "worker",
    permissions: effective,
    sandbox,
  };
}

/** The node's environment variables a plugin was granted to read. */
function grantedEnv(env: boolean | string[]): Record<string, string> {
  if (env === true) return Deno.env.toObject();
  if (env === false) return {};
  const out: Record<string, string> = {};
  for (const name of env) {
    const value = Deno.env.get(name);
    if (value !== undefined) out[name] = value;
  }
  return out;
}

/**
 * Opens a sandbox, turning Deno's refusal to give a Worker more than the node
 * has into an error that says what to do.
 */
async function open(
  name: string,
  run: () => Promise<WorkerSandbox>,
): Promise<WorkerSandbox> {
  try {
    return await run();
  } catch (err) {
    const message = (err as Error).message;
    throw new PluginError(
      name,
      "load",
      /escalate parent/i.test(message)
        ? `plugin '${name}' was granted a permission this node itself lacks (${message}): start the node with that permission too, or grant less`
        : `plugin '${name}' cannot start in its sandbox: ${message}`,
      { cause: err },
    );
  }
}
