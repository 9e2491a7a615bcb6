/**
 * docs/sagas.md's curl examples, run as written against a real node (with
 * the fixture's `stock.*` and `card.*` task types): each `sh` block of the
 * "Over HTTP" section runs under bash with `PLEXUS` and `TOKEN` set, in
 * order, after the sagas started before it have finished; where an output
 * block follows, the output must equal it (whitespace aside, a task id shown
 * as `task …`).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { eventually, fileTarget, startCluster } from "../cluster/_cluster.ts";

const DOC = join(import.meta.dirname!, "../../docs/sagas.md");
const FIXTURE = join(import.meta.dirname!, "_shop_plugin.ts");

/** The section's `sh` blocks, each with the output block right after it. */
function examples(markdown: string): { sh: string; expect?: string }[] {
  const section = markdown.split(/^## /m).find((s) =>
    s.startsWith("Over HTTP")
  );
  assert.ok(section, "docs/sagas.md has an 'Over HTTP' section");
  const blocks = [
    ...section.matchAll(/^```(\w*)\n([\s\S]*?)^```\n(\s*)/gm),
  ];
  const out: { sh: string; expect?: string }[] = [];
  blocks.forEach((b, i) => {
    if (b[1] !== "sh") return;
    const next = blocks[i + 1];
    const adjacent = next && next.index === b.index! + b[0].length;
    out.push({
      sh: b[2],
      expect: adjacent && next[1] !== "sh" ? next[2] : undefined,
    });
  });
  return out;
}

const squash = (s: string) =>
  s.replace(/task [0-9a-f-]{36}/g, "task …").replace(/\s+/g, "");

Deno.test("docs/sagas.md: the curl examples answer what the page shows", async () => {
  await using c = await startCluster(fileTarget, {
    nodes: 1,
    args: ["--plugin", "builtin:sagas", "--plugin", FIXTURE],
    config: {
      pluginTrust: { "saga-shop": "trusted" },
      pluginConfig: { sagas: { tickMs: 20 } },
    },
  });
  if (!c) return;
  const node = c.nodes[0];
  const token = await node.token("analyst");
  const list = examples(await Deno.readTextFile(DOC));
  assert.ok(list.length >= 6, `${list.length} examples`);
  assert.ok(
    list.filter((e) => e.expect !== undefined).length >= 5,
    "most examples show their output",
  );
  for (const ex of list) {
    // Sagas started by earlier examples finish first.
    await eventually(
      async () =>
        (await Array.fromAsync(c.kv.list({ prefix: ["sagas", "open"] })))
          .length,
      (open) => open === 0,
      "the sagas started so far to finish",
    );
    const run = await new Deno.Command("bash", {
      args: ["-euo", "pipefail", "-c", ex.sh],
      env: { PLEXUS: node.url, TOKEN: token },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(run.stdout);
    assert.equal(
      run.code,
      0,
      `${ex.sh}\nexit ${run.code}: ${stdout} ${
        new TextDecoder().decode(run.stderr)
      }`,
    );
    if (ex.expect !== undefined) {
      assert.equal(squash(stdout), squash(ex.expect), ex.sh);
    }
  }
});
