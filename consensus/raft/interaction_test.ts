// Scripted interaction tests with golden outputs (testdata/*.txt), in the
// manner of etcd-io/raft's datadriven tests. REWRITE=1 regenerates the
// outputs; review the diff before committing it.
import assert from "node:assert/strict";
import { runScript } from "./_interaction.ts";

const dir = new URL("./testdata/", import.meta.url);
const rewrite = Deno.env.get("REWRITE") === "1";

for (const f of [...Deno.readDirSync(dir)].map((e) => e.name).sort()) {
  if (!f.endsWith(".txt")) continue;
  Deno.test(`raft interaction: ${f.replace(".txt", "")} matches its golden output`, () => {
    const url = new URL(f, dir);
    const want = Deno.readTextFileSync(url);
    const got = runScript(want);
    if (rewrite) Deno.writeTextFileSync(url, got);
    else assert.equal(got, want);
  });
}

Deno.test("raft interaction: a wrong golden output fails", () => {
  const script = "add-nodes 1\n----\nnot what it prints\n";
  assert.notEqual(runScript(script), script);
});
