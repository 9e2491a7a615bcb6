/**
 * The operator's side of plugin sandboxing, as pure functions: which trust
 * level a plugin runs at ({@linkcode trustLevel}), whether the operator
 * granted everything its manifest asks for ({@linkcode missingGrants},
 * {@linkcode checkGrants}), and what a sandbox is then started with: the
 * permissions object of a Deno Worker ({@linkcode workerPermissions}) or the
 * `--allow-*` flags of a child `deno run` ({@linkcode denoFlags}).
 *
 * A sandboxed plugin gets exactly what its manifest's `permissions` request,
 * and only when all of it is granted in `pluginGrants`: a grant wider than the
 * request is not handed on, and a request wider than the grant stops the
 * plugin from starting with a {@linkcode PermissionError} that lists every
 * missing grant.
 *
 * Known holes of the Worker level (docs/sandbox.md; they are Deno's, and no
 * permission set closes them): the worker's own static module graph may import
 * any local file it names in a literal; `data:` imports, `eval` and
 * `new Function` are allowed; `Deno.openKv()` without a path, localStorage and
 * caches need no permission; there is no memory or CPU cap (the host
 * terminates a worker that misses a deadline). The `process` level (a child
 * `deno run` with {@linkcode denoFlags}) is the stronger sandbox.
 *
 * @module
 */
import { basename, dirname, isAbsolute, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { PlexusError } from "../errors.ts";
import type { PermissionSpec } from "../plugin.ts";
import type { TrustLevel } from "../config.ts";

export type { PermissionSpec } from "../plugin.ts";
export type { TrustLevel } from "../config.ts";

/** The permissions of a {@linkcode PermissionSpec}, in Deno's flag order. */
export const PERMISSION_KINDS = [
  "read",
  "write",
  "net",
  "env",
  "sys",
  "run",
  "ffi",
  "import",
] as const;
/** One permission of a {@linkcode PermissionSpec}. */
export type PermissionKind = typeof PERMISSION_KINDS[number];

/** How entries of each permission are compared. */
const MATCH: Record<PermissionKind, "path" | "host" | "name"> = {
  read: "path",
  write: "path",
  ffi: "path",
  net: "host",
  import: "host",
  env: "name",
  sys: "name",
  run: "name",
};

/**
 * The trust level plugin `name` runs at: the operator's choice in
 * `config.pluginTrust`, else `trusted` for a built-in (an origin starting
 * with `builtin:`) and `worker` for anything else.
 *
 * @param name The plugin's manifest name.
 * @param origin Where the plugin was loaded from: its specifier or URL.
 * @param config The node configuration (only `pluginTrust` is read).
 * @returns The level to start the plugin at.
 *
 * @example A third-party plugin is sandboxed unless the operator trusts it
 * ```ts
 * import { trustLevel } from "./permissions.ts";
 * const config = { pluginTrust: { audit: "trusted" as const } };
 * trustLevel("gateway", "builtin:gateway", config); // "trusted"
 * trustLevel("fetcher", "file:///srv/plugins.d/fetcher.ts", config); // "worker"
 * trustLevel("audit", "file:///srv/plugins.d/audit.ts", config); // "trusted"
 * ```
 */
export function trustLevel(
  name: string,
  origin: string,
  config: { pluginTrust?: Readonly<Record<string, TrustLevel>> },
): TrustLevel {
  const chosen = config.pluginTrust;
  if (chosen && Object.hasOwn(chosen, name)) return chosen[name];
  return origin.startsWith("builtin:") ? "trusted" : "worker";
}

/**
 * What `requested` asks for that `granted` does not cover, one line per
 * missing grant (empty: everything is granted). `true` asks for (or grants)
 * all; `false`, an empty list or no key asks for (or grants) nothing.
 *
 * A granted `true` covers any request; a requested `true` is covered only by
 * a granted `true`. A granted list covers each requested entry that is:
 * - `read`, `write`, `ffi` (paths): the same path or under a granted
 *   directory (after normalising `.`, `..` and trailing separators; a
 *   relative path is never under an absolute one, nor the other way round);
 * - `net`, `import` (hosts): the same host (case-insensitive) and port, or a
 *   granted host without a port, which covers that host on any port;
 * - `env`, `sys`, `run` (names): the same name.
 *
 * @param requested The manifest's `permissions`.
 * @param granted The operator's grant (`pluginGrants[name]`).
 * @returns One human-readable line per missing grant.
 *
 * @example Lines name the permission and what is missing
 * ```ts
 * import { missingGrants } from "./permissions.ts";
 * missingGrants(
 *   { net: ["api.example.com", "db:5432"], env: true, read: true },
 *   { net: ["db"], env: ["HOME"] },
 * );
 * // [
 * //   "read: requested, nothing granted",
 * //   "net: 'api.example.com' not granted",
 * //   "env: all requested, granted [HOME]",
 * // ]
 * missingGrants({ read: ["/srv/data/in"] }, { read: ["/srv/data"] }); // []
 * ```
 */
export function missingGrants(
  requested: PermissionSpec | undefined,
  granted: PermissionSpec | undefined,
): string[] {
  const lines: string[] = [];
  for (const kind of PERMISSION_KINDS) {
    const want = requested?.[kind];
    const have = granted?.[kind];
    if (!asks(want) || have === true) continue;
    const haveList = Array.isArray(have) ? have : [];
    if (want === true) {
      lines.push(
        haveList.length === 0
          ? `${kind}: requested, nothing granted`
          : `${kind}: all requested, granted [${haveList.join(", ")}]`,
      );
      continue;
    }
    for (const entry of unique(want as string[])) {
      if (!haveList.some((g) => covers(kind, g, entry))) {
        lines.push(`${kind}: '${entry}' not granted`);
      }
    }
  }
  return lines;
}

/**
 * The permissions a sandbox gets: exactly what was requested, every key
 * explicit (`false` for each permission not requested, lists without
 * duplicates). Only for a request that is fully granted: call it after
 * {@linkcode missingGrants} came back empty (or use {@linkcode checkGrants}).
 *
 * @param requested The manifest's `permissions`.
 * @param granted The operator's grant.
 * @returns Every permission, `true`, `false` or a list.
 * @throws {RangeError} When something requested is not granted.
 *
 * @example A wider grant is not handed on
 * ```ts
 * import { effectivePermissions } from "./permissions.ts";
 * const e = effectivePermissions({ net: ["api.example.com"] }, { net: true, env: true });
 * e.net; // ["api.example.com"]
 * e.env; // false
 * ```
 */
export function effectivePermissions(
  requested: PermissionSpec | undefined,
  granted: PermissionSpec | undefined,
): Required<PermissionSpec> {
  const missing = missingGrants(requested, granted);
  if (missing.length > 0) {
    throw new RangeError(
      `effectivePermissions: not everything requested is granted (${
        missing.join("; ")
      }); check missingGrants first`,
    );
  }
  const out = {} as Required<PermissionSpec>;
  for (const kind of PERMISSION_KINDS) {
    const want = requested?.[kind];
    out[kind] = want === true ? true : asks(want) ? unique(want) : false;
  }
  return out;
}

/**
 * Raised when a sandboxed plugin's manifest asks for more than the operator
 * granted: the plugin does not start. Names the plugin and every missing
 * grant, and where to grant it.
 *
 * @example Usage
 * ```ts
 * import { PermissionError } from "./permissions.ts";
 * const err = new PermissionError("fetcher", ["net: 'example.com' not granted"]);
 * err.code; // "grants_missing"
 * err.message;
 * // "plugin 'fetcher' asks for more than it was granted: net: 'example.com'
 * //  not granted (grant it in pluginGrants.fetcher)"
 * ```
 */
export class PermissionError extends PlexusError {
  /** Always `"PermissionError"`. */
  override name = "PermissionError";
  /** The plugin that was not started. */
  readonly plugin: string;
  /** One line per missing grant, as {@linkcode missingGrants} gives them. */
  readonly missing: readonly string[];
  /**
   * Creates the error for `plugin`, listing each line of `missing`.
   *
   * @param plugin The plugin's name.
   * @param missing The lines from {@linkcode missingGrants}.
   */
  constructor(plugin: string, missing: readonly string[]) {
    super(
      "grants_missing",
      `plugin '${plugin}' asks for more than it was granted: ${
        missing.join("; ")
      } (grant it in ${grantsPath(plugin)})`,
      { retryable: false, data: { plugin, missing: [...missing] } },
    );
    this.plugin = plugin;
    this.missing = [...missing];
  }
}

/**
 * {@linkcode missingGrants} and {@linkcode effectivePermissions} in one: the
 * permissions plugin `plugin`'s sandbox gets, or a {@linkcode PermissionError}
 * listing every missing grant.
 *
 * @param plugin The plugin's name (for the error).
 * @param requested The manifest's `permissions`.
 * @param granted The operator's grant (`pluginGrants[plugin]`).
 * @returns Every permission, `true`, `false` or a list.
 * @throws {PermissionError} When something requested is not granted.
 *
 * @example Usage
 * ```ts
 * import { checkGrants, PermissionError } from "./permissions.ts";
 * checkGrants("fetcher", { net: ["example.com"] }, { net: ["example.com"] }).net;
 * // ["example.com"]
 * try {
 *   checkGrants("fetcher", { env: true }, undefined);
 * } catch (err) {
 *   err instanceof PermissionError; // true
 * }
 * ```
 */
export function checkGrants(
  plugin: string,
  requested: PermissionSpec | undefined,
  granted: PermissionSpec | undefined,
): Required<PermissionSpec> {
  const missing = missingGrants(requested, granted);
  if (missing.length > 0) throw new PermissionError(plugin, missing);
  return effectivePermissions(requested, granted);
}

/**
 * The `deno.permissions` option for `new Worker(url, { type: "module", deno:
 * { permissions } })` (which needs `--unstable-worker-options`): every key
 * explicit, never `"inherit"`, so the worker has exactly `effective` plus what
 * it needs to import the plugin itself:
 * - a `file:` plugin: read access to its file, or to its folder when it is a
 *   folder plugin (a URL ending in `/` or in `/mod.ts`), since a computed
 *   `import()` needs read permission;
 * - an `http:`/`https:` plugin: `import` of its host (with the port when the
 *   URL names one).
 * Other schemes (`npm:`, `jsr:`, `data:`) get nothing added.
 *
 * The known holes stay open whatever this returns: the worker's own static
 * imports of local files, `data:` imports, `eval`/`new Function`, KV opened
 * without a path, and no memory or CPU cap (see the module doc).
 *
 * @param effective What {@linkcode effectivePermissions} returned.
 * @param pluginUrl The plugin module's resolved URL.
 * @returns The Worker permissions object.
 *
 * @example Usage
 * ```ts
 * import { workerPermissions } from "./permissions.ts";
 * const p = workerPermissions(
 *   { net: ["api.example.com"] },
 *   "file:///srv/plugins.d/fetcher/mod.ts",
 * );
 * p.read; // ["/srv/plugins.d/fetcher"] (on POSIX)
 * p.net; // ["api.example.com"]
 * p.env; // false
 * ```
 */
export function workerPermissions(
  effective: PermissionSpec,
  pluginUrl: string | URL,
): Deno.PermissionOptionsObject {
  const out = {} as Record<PermissionKind, boolean | string[]>;
  for (const kind of PERMISSION_KINDS) {
    const value = effective[kind];
    out[kind] = value === true ? true : asks(value) ? unique(value) : false;
  }
  const url = new URL(pluginUrl);
  if (url.protocol === "file:") {
    const path = fileURLToPath(url);
    const own = url.pathname.endsWith("/")
      ? trimSeparator(path)
      : basename(path) === "mod.ts"
      ? dirname(path)
      : path;
    out.read = withEntry(out.read, own);
  } else if (url.protocol === "https:" || url.protocol === "http:") {
    out.import = withEntry(out.import, url.host);
  }
  return out;
}

/**
 * The same permissions as {@linkcode workerPermissions}, as flags for a
 * child `deno run` (the `process` level): `--no-prompt` (so a terminal never
 * asks the operator to widen them), then one `--allow-NAME` or
 * `--allow-NAME=a,b` per permission given; a permission not given has no flag,
 * so it is denied. Never `-A` nor `--allow-all`.
 *
 * @param effective What {@linkcode effectivePermissions} returned.
 * @param pluginUrl The plugin module's resolved URL.
 * @returns The flags, to put before the script in `deno run`.
 * @throws {RangeError} When an entry contains a comma (the flags' separator).
 *
 * @example Usage
 * ```ts
 * import { denoFlags } from "./permissions.ts";
 * denoFlags({ net: ["api.example.com"], env: true }, "https://plugins.example.com/fetcher.ts");
 * // ["--no-prompt", "--allow-net=api.example.com", "--allow-env",
 * //  "--allow-import=plugins.example.com"]
 * ```
 */
export function denoFlags(
  effective: PermissionSpec,
  pluginUrl: string | URL,
): string[] {
  const permissions = workerPermissions(effective, pluginUrl);
  const flags = ["--no-prompt"];
  for (const kind of PERMISSION_KINDS) {
    const value = permissions[kind];
    if (value === true) {
      flags.push(`--allow-${kind}`);
    } else if (Array.isArray(value) && value.length > 0) {
      const entries = value.map(String);
      const bad = entries.find((e) => e.includes(",") || e === "");
      if (bad !== undefined) {
        throw new RangeError(
          `denoFlags: ${kind} entry '${bad}' cannot be passed as a flag (empty or contains a comma)`,
        );
      }
      flags.push(`--allow-${kind}=${entries.join(",")}`);
    }
  }
  return flags;
}

/** Whether a permission value asks for (or grants) anything. */
function asks(
  value: boolean | string[] | undefined,
): value is true | string[] {
  return value === true || (Array.isArray(value) && value.length > 0);
}

function unique(list: string[]): string[] {
  return [...new Set(list)];
}

/** `list` with `entry` added, unless it already holds everything. */
function withEntry(
  value: boolean | string[],
  entry: string,
): true | string[] {
  if (value === true) return true;
  const list = Array.isArray(value) ? value : [];
  return list.includes(entry) ? list : [...list, entry];
}

/** Whether the granted entry `have` covers the requested entry `want`. */
function covers(kind: PermissionKind, have: string, want: string): boolean {
  switch (MATCH[kind]) {
    case "path":
      return pathCovers(have, want);
    case "host":
      return hostCovers(have, want);
    default:
      return have === want;
  }
}

function trimSeparator(path: string): string {
  let p = path;
  while (p.length > 1 && p.endsWith(sep) && !/^[A-Za-z]:\\$/.test(p)) {
    p = p.slice(0, -1);
  }
  return p;
}

/** `want` is `have` or under the directory `have`. */
function pathCovers(have: string, want: string): boolean {
  if (have === "" || want === "") return false;
  const g = trimSeparator(normalize(have));
  const w = trimSeparator(normalize(want));
  if (g === w) return true;
  if (isAbsolute(g) !== isAbsolute(w)) return false;
  const outside = w === ".." || w.startsWith(`..${sep}`);
  if (g === ".") return !outside;
  return w.startsWith(g.endsWith(sep) ? g : g + sep);
}

/** Splits `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address. */
function parseHost(entry: string): { host: string; port?: string } {
  const e = entry.trim().toLowerCase();
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(e);
  if (bracketed) return { host: bracketed[1], port: bracketed[2] };
  const colons = e.split(":").length - 1;
  if (colons === 1) {
    const [host, port] = e.split(":");
    if (/^\d+$/.test(port)) return { host, port };
  }
  return { host: e };
}

/** Same host and port, or `have` names the host without a port. */
function hostCovers(have: string, want: string): boolean {
  const g = parseHost(have), w = parseHost(want);
  if (g.host === "" || g.host !== w.host) return false;
  return g.port === undefined || g.port === w.port;
}

/** `pluginGrants.NAME`, or `pluginGrants["NAME"]` when NAME is not an identifier. */
function grantsPath(plugin: string): string {
  return /^[A-Za-z_$][\w$]*$/.test(plugin)
    ? `pluginGrants.${plugin}`
    : `pluginGrants[${JSON.stringify(plugin)}]`;
}
