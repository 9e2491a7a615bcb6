/**
 * Runs `deno doc --lint` over every entry of deno.json's `exports` (read
 * from the file, so a new export is covered without editing this script).
 *
 * The entries are linted together, as JSR documents the package: a type
 * exported by any entry is public, so `@plexus/host/testing` may refer to
 * `Kernel` from `@plexus/host` without exporting it again. When the lint
 * fails, each entry is reported with the errors found in the modules it
 * reaches (an error in a shared module counts for every entry reaching it),
 * followed by the diagnostics; the exit code is 1.
 *
 * Run it with `deno task doc:lint`.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

/** Diagnostic lines printed; the rest are counted, not shown. */
const MAX_LINES = 400;

const root = fileURLToPath(new URL("..", import.meta.url));
const config = JSON.parse(
  await Deno.readTextFile(`${root}deno.json`),
) as { exports?: string | Record<string, string> };
const exports: Record<string, string> = typeof config.exports === "string"
  ? { ".": config.exports }
  : config.exports ?? {};
const entries = Object.entries(exports);
if (entries.length === 0) {
  console.error("doc:lint: deno.json has no exports");
  Deno.exit(1);
}

async function deno(args: string[]): Promise<Deno.CommandOutput> {
  return await new Deno.Command("deno", {
    args,
    cwd: root,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
}

const lint = await deno(["doc", "--lint", ...entries.map(([, p]) => p)]);
const describe = ([name, path]: [string, string]) => `${name} (${path})`;
if (lint.code === 0) {
  for (const entry of entries) console.log(`ok     ${describe(entry)}`);
  Deno.exit(0);
}

const lines = new TextDecoder().decode(lint.stderr).trimEnd().split("\n");
/** The file of each diagnostic (`  --> /path/file.ts:line:col`). */
const files = lines.flatMap((l) => {
  const m = /^\s*--> (.+):\d+:\d+$/.exec(l);
  return m ? [m[1]] : [];
});
const attributed = new Set<number>();
for (const entry of entries) {
  const info = await deno(["info", "--json", entry[1]]);
  const modules = new Set<string>(
    info.code === 0
      ? (JSON.parse(new TextDecoder().decode(info.stdout)) as {
        modules: { specifier: string }[];
      }).modules
        .filter((m) => m.specifier.startsWith("file:"))
        .map((m) => fileURLToPath(m.specifier))
      : [],
  );
  const mine = files.flatMap((f, i) => modules.has(f) ? [i] : []);
  for (const i of mine) attributed.add(i);
  console.log(
    mine.length === 0
      ? `ok     ${describe(entry)}`
      : `FAILED ${
        describe(entry)
      }: ${mine.length} error(s) in modules it reaches`,
  );
}
if (attributed.size < files.length) {
  console.log(
    `FAILED ${
      files.length - attributed.size
    } error(s) in dependencies (npm or remote modules) re-exported by an entry`,
  );
}
console.log(lines.slice(0, MAX_LINES).join("\n"));
if (lines.length > MAX_LINES) {
  console.log(`... ${lines.length - MAX_LINES} more lines`);
}
Deno.exit(1);
