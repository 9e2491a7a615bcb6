import assert from "node:assert/strict";
import { BUILTINS } from "./builtins.ts";

Deno.test("builtins: every entry loads a plugin whose name is the last part of its builtin: name", async () => {
  for (const [name, load] of Object.entries(BUILTINS)) {
    const plugin = await load() as { manifest?: { name?: string } };
    assert.equal(plugin?.manifest?.name, name.split("/").at(-1), name);
  }
});
