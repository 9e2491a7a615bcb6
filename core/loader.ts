/**
 * Resolves plugin specifiers and imports plugin modules.
 *
 * Accepted specifiers: `builtin:NAME`, a relative (`./`, `../`) or absolute
 * path, a `file:`, `https:` or `http:` URL, and `npm:`/`jsr:` packages. A
 * drop-in folder (default `./plugins.d/`) is scanned at start: every `.ts`,
 * `.js` or `.mjs` file in it, and every sub-folder's `mod.ts`, in name order.
 * What `builtin:` can name is a {@linkcode PluginCatalog} the caller passes
 * in (Plexus's own is `builtins.ts` beside `main.ts`); the kernel knows none.
 *
 * @module
 */
import { dirname, isAbsolute, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { PluginError } from "./plugin.ts";

const URL_SCHEMES = /^(file|https?|npm|jsr):/;

/**
 * Plugins by `builtin:` name (`transports/kafka`). Each entry imports its
 * module lazily and resolves to the plugin, as a file's default export would.
 */
export type PluginCatalog = Readonly<Record<string, () => Promise<unknown>>>;

/** Options for {@linkcode resolveSpecifier} and {@linkcode loadPlugin}. */
export interface LoadOptions {
  /** Folder relative paths resolve against. @default {Deno.cwd()} */
  cwd?: string;
  /** What `builtin:NAME` can name. @default {{}} */
  builtins?: PluginCatalog;
  /**
   * A reload's number: a `file:` module is then imported under a query
   * that holds it, so Deno's module cache cannot answer with the copy it
   * evaluated before (hot swap). Modules it imports stay cached.
   */
  fresh?: number;
}

/**
 * Catalog names under a folder, without it.
 *
 * @example Usage
 * ```ts
 * import { builtinNames } from "./loader.ts";
 * const catalog = { "balancers/random": () => Promise.resolve({}) };
 * builtinNames(catalog, "balancers"); // ["random"]
 * ```
 */
export function builtinNames(catalog: PluginCatalog, folder: string): string[] {
  return Object.keys(catalog)
    .filter((k) => k.startsWith(folder + "/"))
    .map((k) => k.slice(folder.length + 1));
}

/** A plugin module's default export with where it came from. */
export interface LoadedModule {
  /** The specifier as given. */
  origin: string;
  /** The module's default export, still unvalidated. */
  value: unknown;
}

/**
 * Turns a specifier into what `import()` needs: a catalog name or a URL.
 * Relative paths resolve against `options.cwd`.
 */
export function resolveSpecifier(
  spec: string,
  options: LoadOptions = {},
): { builtin: string } | { url: string } {
  const { cwd = Deno.cwd(), builtins = {} } = options;
  if (spec.startsWith("builtin:")) {
    const name = spec.slice("builtin:".length);
    if (!Object.hasOwn(builtins, name)) {
      const known = Object.keys(builtins);
      throw new PluginError(
        spec,
        "load",
        `unknown built-in plugin '${name}' (built in: ${
          known.length ? known.join(", ") : "none"
        })`,
      );
    }
    return { builtin: name };
  }
  if (URL_SCHEMES.test(spec)) return { url: spec };
  if (spec.startsWith("./") || spec.startsWith("../") || isAbsolute(spec)) {
    return { url: pathToFileURL(resolve(cwd, spec)).href };
  }
  throw new PluginError(
    spec,
    "load",
    `cannot resolve plugin specifier '${spec}': use builtin:NAME, a path starting with ./ or /, ` +
      `a file: or https: URL, or npm:PACKAGE`,
  );
}

/**
 * `url` under a query naming reload `fresh`, for a `file:` URL (hot swap).
 *
 * @example Usage
 * ```ts
 * import { freshUrl } from "./loader.ts";
 * freshUrl("file:///p/mod.ts", 2); // "file:///p/mod.ts?plexus-reload=2"
 * ```
 */
export function freshUrl(url: string, fresh?: number): string {
  if (!fresh || !url.startsWith("file:")) return url;
  return `${url}${url.includes("?") ? "&" : "?"}plexus-reload=${fresh}`;
}

/**
 * Imports the module a specifier names and returns its default export.
 * Throws a {@linkcode PluginError} naming the specifier when it cannot.
 *
 * @example Usage
 * ```ts
 * import { loadPlugin } from "./loader.ts";
 * const noop = { manifest: { name: "noop" } };
 * const builtins = { "examples/noop": () => Promise.resolve(noop) };
 * const { value } = await loadPlugin("builtin:examples/noop", { builtins });
 * value === noop; // true
 * ```
 */
export function loadPlugin(
  spec: string,
  options: LoadOptions = {},
): Promise<LoadedModule> {
  return importPlugin(spec, resolveSpecifier(spec, options), options);
}

/**
 * Imports an already resolved `target` (what {@linkcode resolveSpecifier}
 * returned, or the URL of a verified copy of it) and returns its default
 * export; errors name `spec`, as {@linkcode loadPlugin}'s do.
 *
 * @example Usage
 * ```ts
 * import { importPlugin } from "./loader.ts";
 * const noop = { manifest: { name: "noop" } };
 * const builtins = { "examples/noop": () => Promise.resolve(noop) };
 * const { origin } = await importPlugin("builtin:examples/noop", { builtin: "examples/noop" }, { builtins });
 * origin; // "builtin:examples/noop"
 * ```
 */
export async function importPlugin(
  spec: string,
  target: { builtin: string } | { url: string },
  options: LoadOptions = {},
): Promise<LoadedModule> {
  const { builtins = {} } = options;
  let mod: Record<string, unknown>;
  try {
    mod = "builtin" in target
      ? { default: await builtins[target.builtin]() }
      : await import(freshUrl(target.url, options.fresh));
  } catch (err) {
    throw new PluginError(
      spec,
      "load",
      `cannot load plugin '${spec}': ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  if (!("default" in mod)) {
    throw new PluginError(
      spec,
      "load",
      `cannot load plugin '${spec}': the module has no default export (export default a {manifest, setup} object)`,
    );
  }
  return { origin: spec, value: mod.default };
}

/**
 * Lists the plugin files in a drop-in folder as absolute paths, sorted by
 * name. A missing folder yields an empty list.
 */
export async function scanDropIn(
  dir: string,
  cwd: string = Deno.cwd(),
): Promise<string[]> {
  const root = resolve(cwd, dir);
  const found: string[] = [];
  try {
    for await (const entry of Deno.readDir(root)) {
      if (entry.name.startsWith(".") || entry.name.startsWith("_")) continue;
      if (
        entry.isFile && /\.(ts|js|mjs)$/.test(entry.name) &&
        !/_test\.(ts|js|mjs)$/.test(entry.name)
      ) {
        found.push(join(root, entry.name));
      } else if (entry.isDirectory) {
        const mod = join(root, entry.name, "mod.ts");
        try {
          if ((await Deno.stat(mod)).isFile) found.push(mod);
        } catch {
          // a sub-folder without mod.ts is not a plugin
        }
      }
    }
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw new PluginError(
      dir,
      "load",
      `cannot scan plugin folder '${root}': ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  // Anyone who can write a drop-in can run code in the node: refuse a
  // folder or file that every user of the machine may write.
  const paths = [
    root,
    ...found.flatMap((f) =>
      f.endsWith("/mod.ts") && dirname(f) !== root ? [dirname(f), f] : [f]
    ),
  ];
  for (const path of paths) {
    const mode = (await Deno.stat(path)).mode;
    if (mode !== null && (mode & 0o002) !== 0) {
      throw new PluginError(
        path,
        "load",
        `refusing drop-in plugin path '${path}': any user may write it (mode ${
          (mode & 0o7777).toString(8)
        }); run chmod o-w on it`,
      );
    }
  }
  return found.sort();
}
