import assert from "node:assert/strict";
import { loadAtTrust } from "./load.ts";

const ENV_PLUGIN = new URL("./testdata/env_plugin.ts", import.meta.url).href;

Deno.test("load: without a pluginTrust entry a plugin loads trusted; with 'worker' it loads in a Worker with exactly its grant", async () => {
  const trusted = await loadAtTrust(ENV_PLUGIN, {});
  assert.equal(trusted.trust, "trusted");
  assert.equal(trusted.permissions, "all");
  const sandboxed = await loadAtTrust(ENV_PLUGIN, {
    pluginTrust: { "env-reader": "worker" },
    pluginGrants: { "env-reader": { env: ["HOME", "PATH"] } },
  });
  try {
    assert.equal(sandboxed.trust, "worker");
    assert.deepEqual(
      (sandboxed.permissions as Record<string, unknown>).env,
      ["HOME"],
      "what it asked for, not all that was granted",
    );
  } finally {
    sandboxed.sandbox?.terminate();
  }
  await assert.rejects(
    loadAtTrust(ENV_PLUGIN, { pluginTrust: { "env-reader": "worker" } }),
    /plugin 'env-reader' asks for more than it was granted: env/,
  );
});

Deno.test("load: a grant the node itself lacks is refused with a message that says so", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      new URL("./testdata/escalate.ts", import.meta.url).pathname,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.match(
    text,
    /plugin 'env-reader' was granted a permission this node itself lacks .*start the node with that permission too, or grant less/,
  );
});
