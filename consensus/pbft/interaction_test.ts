import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { runScript } from "./_interaction.ts";

// REWRITE=1 regenerates the expected outputs; review the diff.
const dir = new URL("./testdata/", import.meta.url);
for (const entry of Deno.readDirSync(dir)) {
  if (!entry.name.endsWith(".txt")) continue;
  Deno.test(`pbft interaction: testdata/${entry.name}`, () => {
    const url = new URL(entry.name, dir);
    const text = Deno.readTextFileSync(url);
    const got = runScript(text);
    if (Deno.env.get("REWRITE")) {
      Deno.writeTextFileSync(fileURLToPath(url), got);
    } else assert.equal(got, text);
  });
}
