/**
 * Pinned plugin sources (issue 16): a plugin may be pinned by digest in
 * `pluginIntegrity` (SRI form, `sha256-<base64>`), and a remote plugin
 * (`https:`, `http:`, `npm:`, `jsr:`) without a pin is refused unless the
 * operator allows it (`allowUnpinnedPlugins`).
 *
 * {@linkcode verifyPluginSource} runs before any of a plugin's code does (the
 * in-process import and the probe Worker alike). For `https:`, `http:` and
 * `file:` it reads the bytes once, checks them, and writes them to a
 * content-addressed file under the node's data directory
 * (`plugins/sha256-<hex>/<name>`); that file is what every trust level loads,
 * so no second fetch can answer differently. Such a plugin must be one
 * self-contained file: its own imports would resolve beside the copy, so any
 * import other than `npm:`, `node:`, `data:` or a bare name the node's import
 * map sends there is refused. For `npm:` the pin is the package's npm
 * integrity, as in `deno.lock` (`_npm_pin.ts` says what is checked).
 *
 * @module
 */
import { basename, extname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { PluginError } from "../plugin.ts";
import { checkNpmPin, denoDir, npmPublishedIntegrity } from "./_npm_pin.ts";

/** A digest algorithm a pin may use. */
export type IntegrityAlgorithm = "sha256" | "sha384" | "sha512";

/** Each algorithm's WebCrypto name and digest length in bytes. */
const ALGORITHMS: Record<IntegrityAlgorithm, { hash: string; bytes: number }> =
  {
    sha256: { hash: "SHA-256", bytes: 32 },
    sha384: { hash: "SHA-384", bytes: 48 },
    sha512: { hash: "SHA-512", bytes: 64 },
  };

/** What a bad `pluginIntegrity` value is told (config errors use it). */
export const INTEGRITY_HINT =
  "expected an SRI digest: sha256-, sha384- or sha512- and the base64 of the digest (e.g. sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=)";

/**
 * Whether `value` is one SRI digest (`sha256-`, `sha384-` or `sha512-` and
 * the padded base64 of a digest of that length).
 *
 * @example Usage
 * ```ts
 * import { isIntegrity } from "./integrity.ts";
 * isIntegrity("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="); // true
 * isIntegrity("sha256-abc"); // false: not 32 bytes
 * ```
 */
export function isIntegrity(value: string): boolean {
  return parseIntegrity(value) !== undefined;
}

function parseIntegrity(
  value: string,
): { algorithm: IntegrityAlgorithm; digest: Uint8Array } | undefined {
  const m = /^(sha256|sha384|sha512)-([A-Za-z0-9+/]+={0,2})$/.exec(value);
  if (!m) return undefined;
  const algorithm = m[1] as IntegrityAlgorithm;
  let digest: Uint8Array;
  try {
    digest = Uint8Array.from(atob(m[2]), (c) => c.charCodeAt(0));
  } catch {
    return undefined;
  }
  if (digest.length !== ALGORITHMS[algorithm].bytes) return undefined;
  // Only the canonical (padded) spelling, so equal pins compare equal.
  return btoa(String.fromCharCode(...digest)) === m[2]
    ? { algorithm, digest }
    : undefined;
}

/**
 * The SRI digest of `bytes` (`sha256-<base64>` by default).
 *
 * @example Usage
 * ```ts
 * import { integrityOf } from "./integrity.ts";
 * await integrityOf(new Uint8Array()); // "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
 * ```
 */
export async function integrityOf(
  bytes: Uint8Array<ArrayBuffer>,
  algorithm: IntegrityAlgorithm = "sha256",
): Promise<string> {
  const digest = new Uint8Array(
    await crypto.subtle.digest(ALGORITHMS[algorithm].hash, bytes),
  );
  return `${algorithm}-${btoa(String.fromCharCode(...digest))}`;
}

/** The operator's pinning choices; the fields are the config's. */
export interface PinOptions {
  /** Pinned digest by plugin specifier as written. @default {{}} */
  pluginIntegrity?: Readonly<Record<string, string>>;
  /** Load remote plugins that have no pin. @default {false} */
  allowUnpinnedPlugins?: boolean;
  /** The node's data directory; verified copies go under `plugins/`. @default {"./data"} */
  dataDir?: string;
}

const REMOTE = new Set(["https:", "http:", "npm:", "jsr:"]);

/**
 * Checks plugin `spec` (resolved to `url`) against its pin before any of its
 * code runs, and returns the URL to load: for a pinned `https:`, `http:` or
 * `file:` plugin, a `file:` URL of the verified copy; otherwise `url`.
 *
 * Rejects with a `PluginError` (phase `load`) naming the spec when the bytes
 * differ from the pin (with the expected and the actual digest), when a
 * remote plugin has no pin and `allowUnpinnedPlugins` is off (with the
 * digest to pin, when it could be computed), when a pinned file imports what
 * the pin does not cover, and when a pin cannot apply (`jsr:`, an
 * `npm:` version range).
 *
 * For `npm:NAME@VERSION` (an exact version): Deno fetches the package
 * without evaluating it, the registry's integrity for that version must be
 * the pin, the tarball must hash to it, and Deno's unpacked copy must be
 * exactly the tarball's files (`_npm_pin.ts`); the package's dependencies
 * are checked only by Deno, against the registry or the node's `deno.lock`.
 *
 * @example Usage
 * ```ts ignore
 * const url = await verifyPluginSource(
 *   "https://plugins.example.com/audit.js",
 *   "https://plugins.example.com/audit.js",
 *   { pluginIntegrity: { "https://plugins.example.com/audit.js": "sha256-…" } },
 * );
 * await import(url); // file:///…/data/plugins/sha256-…/audit.js
 * ```
 */
export async function verifyPluginSource(
  spec: string,
  url: string,
  options: PinOptions = {},
): Promise<string> {
  const pin = Object.hasOwn(options.pluginIntegrity ?? {}, spec)
    ? options.pluginIntegrity![spec]
    : undefined;
  const protocol = new URL(url).protocol;
  if (pin === undefined) {
    if (!REMOTE.has(protocol) || options.allowUnpinnedPlugins) return url;
    throw new PluginError(spec, "load", await unpinnedMessage(spec, url));
  }
  const parsed = parseIntegrity(pin);
  if (!parsed) {
    throw new PluginError(
      spec,
      "load",
      `plugin '${spec}': pluginIntegrity value '${pin}' is not valid: ${INTEGRITY_HINT}`,
    );
  }
  if (protocol === "npm:") {
    await checkNpmPin(spec, url, pin, {
      dataDir: options.dataDir ?? "./data",
      digest: (bytes, alg) => integrityOf(bytes, alg as IntegrityAlgorithm),
    });
    return url;
  }
  if (protocol === "jsr:") {
    throw new PluginError(
      spec,
      "load",
      `plugin '${spec}' cannot be pinned: jsr: plugins are not supported by pluginIntegrity; pin a bundled https: file or an npm: package instead`,
    );
  }
  const { bytes, name } = await readSource(spec, url);
  const actual = await integrityOf(bytes, parsed.algorithm);
  if (actual !== pin) {
    throw new PluginError(
      spec,
      "load",
      `plugin '${spec}' does not match its pin: expected ${pin}, got ${actual}`,
    );
  }
  const foreign = foreignImports(new TextDecoder().decode(bytes));
  if (foreign.length > 0) {
    throw new PluginError(
      spec,
      "load",
      `plugin '${spec}' is pinned but imports ${
        foreign.map((s) => `'${s}'`).join(", ")
      }, which its pin does not cover: a pinned plugin must be one self-contained file (bundle it, e.g. with deno bundle; npm:, node: and data: imports are allowed)`,
    );
  }
  return await storeVerified(bytes, name, options.dataDir ?? "./data");
}

/** The refusal of an unpinned remote plugin, with the digest to pin when known. */
async function unpinnedMessage(spec: string, url: string): Promise<string> {
  const allow =
    "or start the node with --allow-unpinned-plugins (PLEXUS_ALLOW_UNPINNED_PLUGINS=true) to load it unchecked";
  const how = (digest: string, what: string) =>
    `plugin '${spec}' is not pinned: add "pluginIntegrity": {${
      JSON.stringify(spec)
    }: "${digest}"} to the config file to load exactly ${what}, ${allow}`;
  const protocol = new URL(url).protocol;
  try {
    if (protocol === "npm:") {
      return how(await npmPublishedIntegrity(spec, url), "that package");
    }
    if (protocol === "https:" || protocol === "http:") {
      const { bytes } = await readSource(spec, url);
      return how(
        await integrityOf(bytes),
        `the ${bytes.length} bytes it serves now`,
      );
    }
  } catch (err) {
    return `plugin '${spec}' is not pinned (and no digest could be computed: ${
      (err as Error).message
    }): pin it in pluginIntegrity, ${allow}`;
  }
  return `plugin '${spec}' is not pinned and ${protocol} plugins cannot be pinned: ${allow}`;
}

const EXTENSIONS = new Set([".ts", ".mts", ".tsx", ".js", ".mjs", ".jsx"]);

/** Reads a `file:` or `http(s):` module once: its bytes and a file name for its copy. */
async function readSource(
  spec: string,
  url: string,
): Promise<{ bytes: Uint8Array<ArrayBuffer>; name: string }> {
  const parsed = new URL(url);
  let bytes: Uint8Array<ArrayBuffer>;
  let type = "";
  try {
    if (parsed.protocol === "file:") {
      bytes = await Deno.readFile(parsed);
    } else {
      const res = await fetch(parsed, { redirect: "follow" });
      if (!res.ok) {
        await res.body?.cancel();
        throw new Error(`${res.status} ${res.statusText}`.trim());
      }
      type = res.headers.get("content-type") ?? "";
      bytes = new Uint8Array(await res.arrayBuffer());
    }
  } catch (err) {
    throw new PluginError(
      spec,
      "load",
      `cannot read plugin '${spec}' to check its pin: ${
        (err as Error).message
      }`,
      { cause: err },
    );
  }
  // Deno picks TypeScript or JavaScript by the file's extension: keep it,
  // or derive it from the media type the server gave.
  const base = basename(decodeURIComponent(parsed.pathname));
  const ext = extname(base).toLowerCase();
  const name = EXTENSIONS.has(ext) && /^[\w.-]+$/.test(base)
    ? base
    : `plugin${
      EXTENSIONS.has(ext)
        ? ext
        : /typescript/.test(type)
        ? ".ts"
        : /jsx/.test(type)
        ? ".jsx"
        : ".js"
    }`;
  return { bytes, name };
}

/**
 * Writes verified bytes to `DATA_DIR/plugins/sha256-<hex>/<name>` (a
 * temporary file renamed into place) and returns its `file:` URL.
 */
async function storeVerified(
  bytes: Uint8Array<ArrayBuffer>,
  name: string,
  dataDir: string,
): Promise<string> {
  const hex = Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  const dir = resolve(dataDir, "plugins", `sha256-${hex}`);
  const file = join(dir, name);
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const temp = `${file}.${crypto.randomUUID()}.tmp`;
  try {
    await Deno.writeFile(temp, bytes, { mode: 0o600 });
    await Deno.rename(temp, file);
  } catch (err) {
    await Deno.remove(temp).catch(() => {});
    throw err;
  }
  return pathToFileURL(file).href;
}

/**
 * The import specifiers in `source` that a pin does not cover: anything but
 * `npm:`, `node:`, `data:` and bare names the import map sends to those.
 * Lexical (it also sees imports in comments and strings): a false alarm
 * refuses the plugin, a miss cannot load unchecked code from a relative
 * path (the copy's folder holds nothing else).
 */
function foreignImports(source: string): string[] {
  const found = new Set<string>();
  const patterns = [
    /\b(?:import|export)\s*(?:type\s+)?(?:[\w$*{}\s,]+?\s*from\s*)?["']([^"'\n]+)["']/g,
    /\bfrom\s*["']([^"'\n]+)["']/g,
    /\bimport\s*\(\s*["'`]([^"'`\n]+)["'`]\s*[,)]/g,
  ];
  for (const pattern of patterns) {
    for (const m of source.matchAll(pattern)) found.add(m[1]);
  }
  return [...found].filter((s) => !covered(s));
}

function covered(specifier: string): boolean {
  if (/^(npm|node|data):/.test(specifier)) return true;
  if (/^(\.{0,2}\/|[a-z][a-z0-9+.-]*:)/i.test(specifier)) return false;
  let resolved: string;
  try {
    resolved = import.meta.resolve(specifier);
  } catch {
    return false;
  }
  // An npm package the import map names resolves into Deno's npm cache.
  return /^(npm|node):/.test(resolved) ||
    resolved.startsWith(pathToFileURL(join(denoDir(), "npm")).href + "/");
}
