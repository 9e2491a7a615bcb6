/**
 * `npm:` pins for `integrity.ts`: the pin is the package's npm integrity
 * (`sha512-…`, as in `deno.lock` and the registry's `dist.integrity`).
 *
 * Deno checks a tarball against the registry's integrity (or the node's
 * `deno.lock`) only when it downloads it, keeps the unpacked files and not
 * the tarball, and never checks its cache again. So before any of the
 * package's code runs: Deno is made to fetch it without evaluating it (its
 * `package.json` as JSON); the registry's integrity for that version must be
 * the pin; the tarball itself (fetched once from the registry's `dist.tarball`
 * and kept under the data dir) must hash to the pin; and the files in Deno's
 * cache must be exactly the tarball's regular files, byte for byte, with
 * nothing added. The package's own dependencies are not covered.
 *
 * @module
 */
import { join, resolve } from "node:path";
import { PluginError } from "../plugin.ts";

/** A package version as Deno's npm cache holds it. */
interface CachedPackage {
  /** The registry's `dist.integrity` for the version. */
  integrity: string;
  /** The registry's `dist.tarball` URL. */
  tarball: string;
  /** The folder Deno unpacked it into. */
  dir: string;
}

/**
 * Checks `npm:NAME@VERSION` against `pin` (see the module doc), keeping the
 * verified tarball under `dataDir`. `digest(bytes, algorithm)` is the SRI
 * digest function of `integrity.ts`.
 */
export async function checkNpmPin(
  spec: string,
  url: string,
  pin: string,
  options: {
    dataDir: string;
    digest: (bytes: Uint8Array<ArrayBuffer>, alg: string) => Promise<string>;
  },
): Promise<void> {
  const { name, version } = npmPackage(spec, url);
  const refuse = (what: string) =>
    new PluginError(
      spec,
      "load",
      `plugin '${spec}' does not match its pin: ${what}`,
    );
  const cannot = (err: unknown) =>
    new PluginError(
      spec,
      "load",
      `cannot check plugin '${spec}' against its pin: ${
        (err as Error).message
      }`,
      { cause: err },
    );
  let cached: CachedPackage[];
  try {
    cached = await fetchIntoCache(name, version);
  } catch (err) {
    throw cannot(err);
  }
  for (const c of cached) {
    if (c.integrity !== pin) {
      throw refuse(
        `expected ${pin}, got ${c.integrity} (the integrity the registry published for ${name}@${version})`,
      );
    }
  }
  const algorithm = pin.slice(0, pin.indexOf("-"));
  let tgz: Uint8Array<ArrayBuffer>;
  try {
    tgz = await pinnedTarball(cached[0].tarball, pin, algorithm, options);
  } catch (err) {
    if (err instanceof PluginError) throw err;
    throw cannot(err);
  }
  const actual = await options.digest(tgz, algorithm);
  if (actual !== pin) {
    throw refuse(
      `expected ${pin}, got ${actual} (the tarball ${cached[0].tarball})`,
    );
  }
  const files = await tarFiles(tgz);
  for (const c of cached) {
    const differs = await firstDifference(files, c.dir);
    if (differs !== undefined) {
      throw refuse(
        `Deno's cached copy of ${name}@${version} in ${c.dir} differs from the pinned tarball at '${differs}' (delete that folder so Deno fetches it again)`,
      );
    }
  }
}

/**
 * The registry's integrity for `npm:NAME@VERSION`, fetching the package
 * into Deno's cache (not evaluating it): the digest to pin.
 */
export async function npmPublishedIntegrity(
  spec: string,
  url: string,
): Promise<string> {
  const { name, version } = npmPackage(spec, url);
  const cached = await fetchIntoCache(name, version);
  const all = new Set(cached.map((c) => c.integrity));
  if (all.size > 1) {
    throw new Error(
      `registries in Deno's npm cache disagree on ${name}@${version}: ${
        [...all].join(", ")
      }`,
    );
  }
  return cached[0].integrity;
}

/** `npm:NAME@VERSION[/path]` with an exact version, else a refusal. */
function npmPackage(
  spec: string,
  url: string,
): { name: string; version: string } {
  const m = /^npm:\/?((?:@[^/@]+\/)?[^/@]+)@([^/]+)(?:\/.*)?$/.exec(url);
  if (
    !m || !/^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/.test(m[2])
  ) {
    throw new PluginError(
      spec,
      "load",
      `plugin '${spec}' cannot be pinned without an exact version: write npm:NAME@1.2.3 (a pin is the integrity of one published version)`,
    );
  }
  return { name: m[1], version: m[2] };
}

/**
 * Makes Deno fetch `name@version` (nothing of it is evaluated) and returns
 * each registry's record of it in Deno's npm cache.
 */
async function fetchIntoCache(
  name: string,
  version: string,
): Promise<CachedPackage[]> {
  try {
    // JSON is never evaluated; Deno downloads, checks and unpacks the
    // tarball to find it (even when `exports` then refuses the subpath).
    await import(`npm:${name}@${version}/package.json`, {
      with: { type: "json" },
    });
  } catch (err) {
    if (!/ERR_PACKAGE_PATH_NOT_EXPORTED/.test(String(err))) throw err;
  }
  const npmCache = join(denoDir(), "npm");
  const found: CachedPackage[] = [];
  for await (const registry of Deno.readDir(npmCache)) {
    if (!registry.isDirectory) continue;
    const folder = join(npmCache, registry.name, ...name.split("/"));
    let text: string;
    try {
      text = await Deno.readTextFile(join(folder, "registry.json"));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) continue;
      throw err;
    }
    const dist = JSON.parse(text)?.versions?.[version]?.dist;
    if (
      typeof dist?.integrity !== "string" || typeof dist?.tarball !== "string"
    ) continue;
    found.push({
      integrity: dist.integrity.trim(),
      tarball: dist.tarball,
      dir: join(folder, version),
    });
  }
  if (found.length === 0) {
    throw new Error(
      `no registry record of ${name}@${version} in Deno's npm cache (${npmCache})`,
    );
  }
  return found;
}

/**
 * The tarball whose digest is `pin`: the copy kept under the data dir when
 * it still matches, else fetched once from `url` and kept when it matches.
 */
async function pinnedTarball(
  url: string,
  pin: string,
  algorithm: string,
  options: {
    dataDir: string;
    digest: (bytes: Uint8Array<ArrayBuffer>, alg: string) => Promise<string>;
  },
): Promise<Uint8Array<ArrayBuffer>> {
  const hex = Array.from(
    Uint8Array.from(
      atob(pin.slice(algorithm.length + 1)),
      (c) => c.charCodeAt(0),
    ),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  const dir = resolve(options.dataDir, "plugins", "npm");
  const file = join(dir, `${algorithm}-${hex}.tgz`);
  try {
    const kept = await Deno.readFile(file);
    if (await options.digest(kept, algorithm) === pin) return kept;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const res = await fetch(url);
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`fetching ${url}: ${res.status} ${res.statusText}`.trim());
  }
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (await options.digest(bytes, algorithm) === pin) {
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const temp = `${file}.${crypto.randomUUID()}.tmp`;
    await Deno.writeFile(temp, bytes, { mode: 0o600 });
    await Deno.rename(temp, file);
  }
  return bytes;
}

/**
 * The regular files of a gzipped tarball by path, without the first path
 * component (`package/`), as Deno unpacks them: a later entry for the same
 * path wins; links and other entry types are not unpacked.
 */
async function tarFiles(tgz: Uint8Array<ArrayBuffer>): Promise<
  Map<string, Uint8Array>
> {
  const tar = new Uint8Array(
    await new Response(
      new Blob([tgz]).stream().pipeThrough(new DecompressionStream("gzip")),
    ).arrayBuffer(),
  );
  const text = (b: Uint8Array) =>
    new TextDecoder().decode(b).replace(/\0[\s\S]*$/, "");
  const files = new Map<string, Uint8Array>();
  let longName: string | undefined;
  let offset = 0;
  while (offset + 512 <= tar.length) {
    const header = tar.subarray(offset, offset + 512);
    if (header.every((b) => b === 0)) break;
    const size = parseInt(text(header.subarray(124, 136)).trim() || "0", 8);
    const type = String.fromCharCode(header[156]);
    let path = text(header.subarray(0, 100));
    if (text(header.subarray(257, 262)) === "ustar") {
      const prefix = text(header.subarray(345, 500));
      if (prefix) path = `${prefix}/${path}`;
    }
    const data = tar.subarray(offset + 512, offset + 512 + size);
    offset += 512 + Math.ceil(size / 512) * 512;
    if (type === "L") {
      longName = text(data);
      continue;
    }
    if (type === "x") {
      longName = paxPath(new TextDecoder().decode(data)) ?? longName;
      continue;
    }
    if (type === "g") continue;
    if (longName !== undefined) [path, longName] = [longName, undefined];
    if (type !== "0" && type !== "\0") continue;
    const parts = path.split("/").filter((p) => p !== "" && p !== ".");
    files.set(parts.slice(1).join("/"), data);
  }
  return files;
}

/** The `path` record of a pax extended header, if any. */
function paxPath(records: string): string | undefined {
  let rest = records;
  while (rest.length > 0) {
    const space = rest.indexOf(" ");
    const length = Number(rest.slice(0, space));
    if (!(length > 0)) return undefined;
    const record = rest.slice(space + 1, length - 1);
    if (record.startsWith("path=")) return record.slice("path=".length);
    rest = rest.slice(length);
  }
  return undefined;
}

/**
 * The first path where folder `dir` and `files` differ (a file missing,
 * added or with other bytes), or nothing when they are the same.
 */
async function firstDifference(
  files: Map<string, Uint8Array>,
  dir: string,
): Promise<string | undefined> {
  const seen = new Set<string>();
  const walk = async (sub: string): Promise<string | undefined> => {
    for await (const entry of Deno.readDir(join(dir, sub))) {
      const rel = sub ? `${sub}/${entry.name}` : entry.name;
      if (entry.isDirectory) {
        const found = await walk(rel);
        if (found !== undefined) return found;
        continue;
      }
      const want = files.get(rel);
      if (want === undefined || !entry.isFile) return rel;
      const have = await Deno.readFile(join(dir, rel));
      if (
        have.length !== want.length || have.some((b, i) => b !== want[i])
      ) return rel;
      seen.add(rel);
    }
    return undefined;
  };
  const found = await walk("");
  if (found !== undefined) return found;
  for (const path of files.keys()) if (!seen.has(path)) return path;
  return undefined;
}

/** Deno's cache folder: `DENO_DIR`, else its platform default. */
export function denoDir(): string {
  const set = Deno.env.get("DENO_DIR");
  if (set) return resolve(set);
  if (Deno.build.os === "windows") {
    return join(Deno.env.get("LOCALAPPDATA") ?? "", "deno");
  }
  const home = Deno.env.get("HOME") ?? "";
  if (Deno.build.os === "darwin") {
    return join(home, "Library", "Caches", "deno");
  }
  return join(Deno.env.get("XDG_CACHE_HOME") || join(home, ".cache"), "deno");
}
