/**
 * Helpers for the tests that follow a plugin guide from a folder outside the
 * repository (`plugin_author_test.ts` for the README's, `plugin_kinds_test.ts`
 * for docs/plugins.md): read a guide's code blocks, lay out the author's
 * folder beside a `plexus` link to this repository, and give the author's
 * commands a fresh HOME.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { REPO } from "./_process.ts";

/** The clone, as the guides' `links` name it. */
export const CLONE_DIR = "plexus";

/** A fenced code block: its info string and its lines. */
export interface Block {
  info: string;
  lines: string[];
}

/** Every fenced code block of `markdown`, in order. */
export function codeBlocks(markdown: string): Block[] {
  const blocks: Block[] = [];
  let open: Block | undefined;
  for (const line of markdown.split("\n")) {
    if (open === undefined) {
      const m = /^```(.*)$/.exec(line);
      if (m) open = { info: m[1].trim(), lines: [] };
    } else if (line === "```") {
      blocks.push(open);
      open = undefined;
    } else {
      open.lines.push(line);
    }
  }
  return blocks;
}

/** The section under `heading` (a whole line), up to the next heading of its level. */
export function section(
  markdown: string,
  heading: string,
  where: string,
): string {
  const start = markdown.indexOf(`\n${heading}\n`);
  assert.ok(start >= 0, `${where}: no '${heading}' section`);
  const level = heading.slice(0, heading.indexOf(" ") + 1);
  const end = markdown.indexOf(`\n${level}`, start + 1);
  return markdown.slice(start, end < 0 ? undefined : end);
}

/** The block whose first line is `// NAME`, as the guides label their files. */
export function fileBlock(
  blocks: Block[],
  name: string,
  where: string,
): string {
  const found = blocks.filter((b) => b.lines[0] === `// ${name}`);
  assert.equal(
    found.length,
    1,
    `${where}: expected one code block starting with '// ${name}', found ${found.length}`,
  );
  return found[0].lines.join("\n") + "\n";
}

/** The lines of the `sh` blocks that start with `prefix`, without comments. */
export function commands(blocks: Block[], prefix: string): string[] {
  return blocks.filter((b) => b.info === "sh").flatMap((b) => b.lines)
    .map((l) => l.replace(/\s#.*$/, "").trim())
    .filter((l) => l === prefix || l.startsWith(`${prefix} `));
}

/** The one command in the `sh` blocks that starts with `prefix`, split on spaces. */
export function command(
  blocks: Block[],
  prefix: string,
  where: string,
): string[] {
  const lines = commands(blocks, prefix);
  assert.equal(
    lines.length,
    1,
    `${where}: expected one '${prefix}' command, found ${lines.length}`,
  );
  return lines[0].split(/\s+/);
}

/** The hex SHA-256 of a file. */
export async function sha256(path: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    await Deno.readFile(path),
  );
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

/** The Deno cache in use, so the child reuses it while HOME is empty. */
async function denoDir(): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdout: "piped",
    stderr: "null",
  }).output();
  return JSON.parse(new TextDecoder().decode(out.stdout)).denoDir;
}

/** The parent's environment without PLEXUS_* and with HOME set to `home`. */
export async function authorEnv(
  home: string,
): Promise<Record<string, string>> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    if (!k.startsWith("PLEXUS_")) env[k] = v;
  }
  return {
    ...env,
    HOME: home,
    DENO_DIR: await denoDir(),
    NO_COLOR: "1",
    DENO_NO_UPDATE_CHECK: "1",
  };
}

/** An author's folder beside a link to this repository, in a temp folder. */
export interface AuthorFolder extends AsyncDisposable {
  /** The temp folder holding the link, the author's folder and HOME. */
  root: string;
  /** The author's folder. */
  dir: string;
  /** An empty HOME. */
  home: string;
}

/**
 * Makes `ROOT/plexus` (a link to this repository), `ROOT/NAME` with `files`
 * written in it, and an empty `ROOT/home`. Disposing it removes the link
 * first, so nothing can reach into the repository, then the rest.
 */
export async function authorFolder(
  name: string,
  files: Record<string, string>,
): Promise<AuthorFolder> {
  const root = await Deno.makeTempDir({ prefix: "plexus-author-" });
  const dir = join(root, name);
  const home = join(root, "home");
  await Deno.mkdir(dir);
  await Deno.mkdir(home);
  await Deno.symlink(REPO, join(root, CLONE_DIR));
  for (const [file, text] of Object.entries(files)) {
    await Deno.writeTextFile(join(dir, file), text);
  }
  return {
    root,
    dir,
    home,
    async [Symbol.asyncDispose]() {
      await Deno.remove(join(root, CLONE_DIR)).catch(() => {});
      await Deno.remove(root, { recursive: true });
    },
  };
}
