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
 * Built-ins (`builtin:`) are always trusted; any other plugin without an
 * entry in `pluginTrust` runs at `worker` (see docs/sandbox.md).
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
import {
  openWorkerSandbox,
  readPluginName,
  sandboxUnsupported,
  type WorkerSandbox,
} from "./worker_host.ts";
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
  /**
   * Raw config by plugin name: a sandboxed plugin's is validated at load,
   * inside its sandbox (the kernel cannot see its schema), so a bad config
   * stops the node before any plugin starts, as in-process. @default {{}}
   */
  pluginConfig?: Readonly<Record<string, unknown>>;
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
  const resolved = resolveSpecifier(spec, options);
  // Checked before any of its code runs, in the node or in the probe Worker.
  const target = "builtin" in resolved
    ? resolved
    : { url: await verifyPluginSource(spec, resolved.url, options.pins) };
  if ("builtin" in target) {
    const { value, origin } = await importPlugin(spec, target, options);
    return { value, origin, trust: "trusted", permissions: "all" };
  }
  const url = target.url;
  // Deno prints a Worker's module-load error even when it is handled: a
  // missing file is refused here, in one line.
  if (url.startsWith("file:")) {
    try {
      await Deno.stat(new URL(url));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new PluginError(
          spec,
          "load",
          `cannot load plugin '${spec}': Module not found "${url}"`,
        );
      }
    }
  }
  const unsupported = sandboxUnsupported();
  if (unsupported) {
    return await loadUnsandboxed(spec, target, options, unsupported);
  }
  let probe: WorkerSandbox;
  try {
    probe = await openWorkerSandbox(url, {
      permissions: workerPermissions(NONE, url),
    });
  } catch (err) {
    throw new PluginError(
      spec,
      "load",
      // Deno's module errors carry a stack after the first line.
      `cannot load plugin '${spec}': ${firstLine(err)}`,
      { cause: err },
    );
  }
  const name = probe.manifest.name;
  const level: TrustLevel = Object.hasOwn(trust, name) ? trust[name] : "worker";
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
      `plugin '${name}' is a ${probe.manifest.kind}: that contract is synchronous and on the node's hot path, so it cannot be called across a sandbox; run it trusted (--plugin-trust ${name}=trusted, or pluginTrust: {"${name}": "trusted"}; see docs/sandbox.md)`,
    );
  }
  try {
    await probe.checkConfig(options.pluginConfig?.[name] ?? {});
  } catch (err) {
    probe.terminate("invalid config");
    throw err;
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

/**
 * Where no sandbox can start (the bundle): the plugin's name is read in a
 * Worker with no permissions, and it loads in-process only when the
 * operator set it `trusted`; any other level is refused, saying why.
 */
async function loadUnsandboxed(
  spec: string,
  target: { url: string },
  options: TrustOptions,
  why: string,
): Promise<TrustedLoad> {
  let name: string;
  try {
    name = await readPluginName(
      target.url,
      workerPermissions(NONE, target.url),
    );
  } catch (err) {
    throw new PluginError(
      spec,
      "load",
      `cannot load plugin '${spec}': ${firstLine(err)}`,
      { cause: err },
    );
  }
  const trust = options.pluginTrust ?? {};
  const level = Object.hasOwn(trust, name) ? trust[name] : "worker";
  if (level !== "trusted") {
    throw new PluginError(
      name,
      "load",
      `plugin '${name}' runs at level '${level}'${
        Object.hasOwn(trust, name)
          ? ""
          : " (the default for a plugin that is not built in)"
      }, but ${why}; or run it in-process with pluginTrust {"${name}": "trusted"} (--plugin-trust ${name}=trusted)`,
    );
  }
  const { value, origin } = await importPlugin(spec, target, options);
  return { value, origin, trust: "trusted", permissions: "all" };
}

function firstLine(err: unknown): string {
  return String((err as Error)?.message ?? err).split("\n")[0];
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
