/**
 * Resolves plugin specifiers and imports plugin modules.
 *
 * Accepted specifiers: `builtin:NAME`, a relative (`./`, `../`) or absolute
 * path, a `file:`, `https:` or `http:` URL, and `npm:`/`jsr:` packages. A
 * drop-in folder (default `./plugins.d/`) is scanned at start: every `.ts`,
 * `.js` or `.mjs` file in it, and every sub-folder's `mod.ts`, in name order.
 *
 * @module
 */
import { isAbsolute, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { BUILTINS } from "./builtins.ts";
import { PluginError } from "./plugin.ts";

const URL_SCHEMES = /^(file|https?|npm|jsr):/;

/** A plugin module's default export with where it came from. */
export interface LoadedModule {
  /** The specifier as given. */
  origin: string;
  /** The module's default export, still unvalidated. */
  value: unknown;
}

/**
 * Turns a specifier into what `import()` needs: a builtin's loader or a URL.
 * Relative paths resolve against `cwd`.
 */
export function resolveSpecifier(
  spec: string,
  cwd: string = Deno.cwd(),
): { builtin: string } | { url: string } {
  if (spec.startsWith("builtin:")) {
    const name = spec.slice("builtin:".length);
    if (!(name in BUILTINS)) {
      throw new PluginError(
        spec,
        "load",
        `unknown built-in plugin '${name}' (built in: ${
          Object.keys(BUILTINS).join(", ")
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
 * Imports the module a specifier names and returns its default export.
 * Throws a {@linkcode PluginError} naming the specifier when it cannot.
 *
 * @example Usage
 * ```ts
 * import { loadPlugin } from "./loader.ts";
 * const { value } = await loadPlugin("builtin:examples/hello");
 * ```
 */
export async function loadPlugin(
  spec: string,
  cwd?: string,
): Promise<LoadedModule> {
  const target = resolveSpecifier(spec, cwd);
  let mod: Record<string, unknown>;
  try {
    mod = "builtin" in target
      ? await BUILTINS[target.builtin]()
      : await import(target.url);
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
  return found.sort();
}
