import assert from "node:assert/strict";
import { loadAtTrust } from "./load.ts";

const ENV_PLUGIN = new URL("./testdata/env_plugin.ts", import.meta.url).href;

Deno.test("load: a plugin that is not built in runs at worker without a pluginTrust entry (its manifest's asks then need grants), trusted only when the operator says so", async () => {
  await assert.rejects(
    loadAtTrust(ENV_PLUGIN, {}),
    /plugin 'env-reader' asks for more than it was granted: env/,
    "the default level is worker, and nothing was granted",
  );
  const byDefault = await loadAtTrust(ENV_PLUGIN, {
    pluginGrants: { "env-reader": { env: ["HOME", "PATH"] } },
  });
  try {
    assert.equal(byDefault.trust, "worker");
    assert.deepEqual(
      (byDefault.permissions as Record<string, unknown>).env,
      ["HOME"],
      "what it asked for, not all that was granted",
    );
  } finally {
    byDefault.sandbox?.terminate();
  }
  const trusted = await loadAtTrust(ENV_PLUGIN, {
    pluginTrust: { "env-reader": "trusted" },
  });
  assert.equal(trusted.trust, "trusted");
  assert.equal(trusted.permissions, "all");
  assert.equal(trusted.sandbox, undefined);
  const builtin = await loadAtTrust("builtin:examples/hello", {
    builtins: {
      "examples/hello": () => import("./testdata/env_plugin.ts"),
    },
  });
  assert.equal(builtin.trust, "trusted", "built-ins are always trusted");
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
