/**
 * The docs stay true to the code and to each other: docs/configuration.md is
 * what scripts/gen_config_doc.ts renders from the flag table and the config
 * schemas, the README's docs index lists every page in docs/, and the
 * relative links of the README and the pages moved out of it resolve (file and
 * heading).
 *
 * @module
 */
import assert from "node:assert/strict";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { CONFIG_DOC_PATH, renderConfigDoc } from "../scripts/gen_config_doc.ts";

const REPO = fileURLToPath(new URL("../", import.meta.url));

/** Pages whose links are checked: the README and what was moved out of it. */
const CHECKED = [
  "README.md",
  "docs/configuration.md",
  "docs/http-api.md",
  "docs/testing.md",
];

function read(path: string): Promise<string> {
  return Deno.readTextFile(join(REPO, path));
}

/** Markdown without its fenced code blocks (links there are not links). */
function prose(markdown: string): string {
  return markdown.replace(/^```[^\n]*\n[\s\S]*?^```$/gm, "");
}

/** GitHub's anchors for a page's headings. */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const [, text] of prose(markdown).matchAll(/^#{1,6} (.+)$/gm)) {
    const base = text.trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, "")
      .replaceAll(" ", "-");
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

Deno.test("docs: docs/configuration.md is what scripts/gen_config_doc.ts renders", async () => {
  const expected = await renderConfigDoc();
  const actual = await read(CONFIG_DOC_PATH).catch(() => "");
  if (actual !== expected) {
    const a = actual.split("\n"), e = expected.split("\n");
    const line = e.findIndex((l, i) => l !== a[i]);
    assert.fail(
      `${CONFIG_DOC_PATH} is out of date with core/config.ts, builtins.ts or scripts/gen_config_doc.ts: run deno task docs:config (first difference at line ${
        line + 1
      }: expected ${JSON.stringify(e[line])}, found ${
        JSON.stringify(a[line])
      })`,
    );
  }
});

Deno.test("docs: the README's docs index links every page in docs/", async () => {
  const readme = await read("README.md");
  const start = readme.indexOf("\n## Docs\n");
  assert.ok(start >= 0, "README: no '## Docs' section");
  const end = readme.indexOf("\n## ", start + 1);
  const index = readme.slice(start, end < 0 ? undefined : end);
  const pages: string[] = [];
  for await (const entry of Deno.readDir(join(REPO, "docs"))) {
    if (entry.isFile && entry.name.endsWith(".md")) pages.push(entry.name);
  }
  const missing = pages.sort().filter((p) => !index.includes(`](docs/${p})`));
  assert.deepEqual(
    missing,
    [],
    `README's docs index does not link ${missing.join(", ")}`,
  );
});

Deno.test("docs: relative links in the README and the pages moved out of it resolve to a file and heading", async () => {
  const broken: string[] = [];
  for (const page of CHECKED) {
    const text = await read(page);
    for (const [, target] of prose(text).matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target)) continue;
      const [path, anchor] = target.split("#");
      const file = path
        ? relative(REPO, join(REPO, dirname(page), path))
        : page;
      const linked = await read(file).catch(() => undefined);
      if (linked === undefined) {
        broken.push(`${page}: ${target} (no file ${file})`);
      } else if (
        anchor && file.endsWith(".md") && !anchors(linked).has(anchor)
      ) {
        broken.push(`${page}: ${target} (no heading #${anchor} in ${file})`);
      }
    }
  }
  assert.deepEqual(broken, [], `broken links:\n${broken.join("\n")}`);
});
