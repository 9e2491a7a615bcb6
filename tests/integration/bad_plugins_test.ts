/**
 * Plugins that cannot start make the real process exit non-zero with the
 * plugin's name on stderr; a failing setup rolls back what already started.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runToExit, writeConfig } from "./_process.ts";

Deno.test("bad plugins: an invalid manifest exits non-zero naming the plugin and field", async () => {
  const r = await runToExit({
    args: ["--plugin", "./tests/fixtures/bad_manifest_plugin.ts"],
  });
  assert.notEqual(r.code, 0, r.stderr);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /bad-manifest/);
  assert.match(r.stderr, /version/);
  assert.match(r.stderr, /"one"/, "the bad value is shown");
  assert.ok(
    !r.records.some((l) => l.msg.startsWith("plexus listening")),
    "the node never listened",
  );
});

Deno.test("bad plugins: config refused by the plugin's schema exits non-zero naming plugin and field", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-it-" });
  const config = await writeConfig(dir, {
    pluginConfig: { "strict-config": { limit: "lots" } },
  });
  const r = await runToExit({
    dir,
    args: [
      "--plugin",
      "./plugins/examples/hello.ts",
      "--plugin",
      "./tests/fixtures/strict_config_plugin.ts",
      "--config",
      config,
    ],
  });
  assert.notEqual(r.code, 0, r.stderr);
  assert.match(r.stderr, /strict-config/);
  assert.match(r.stderr, /limit/);
  assert.match(r.stderr, /"lots"/);
  // Configs are validated before anything starts: not even hello started.
  assert.ok(!r.records.some((l) => l.msg === "plugin hello starting"));
  assert.ok(!r.records.some((l) => l.msg === "strict-config setup ran"));
});

Deno.test("bad plugins: a setup that throws exits non-zero and rolls back started plugins", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-it-" });
  const marker = join(dir, "marker.txt");
  const config = await writeConfig(dir, {
    pluginConfig: { marker: { markerFile: marker } },
    // marker writes its file with the node's permissions: in-process.
    pluginTrust: { marker: "trusted" },
  });
  const r = await runToExit({
    dir,
    args: [
      // exploder is listed first but requires extension:marker, so the
      // kernel starts marker first and must undo it.
      "--plugin",
      "./tests/fixtures/throwing_plugin.ts",
      "--plugin",
      "./tests/fixtures/marker_plugin.ts",
      "--config",
      config,
    ],
  });
  assert.notEqual(r.code, 0, r.stderr);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /exploder/);
  assert.match(r.stderr, /boom from exploder setup/);
  const msgs = r.records.map((l) => l.msg);
  assert.ok(msgs.includes("plugin marker running"), msgs.join("\n"));
  assert.ok(msgs.includes("plugin exploder failed"), msgs.join("\n"));
  assert.ok(msgs.includes("marker stop called"), "marker.stop() was called");
  assert.ok(msgs.includes("plugin marker stopped"), msgs.join("\n"));
  assert.ok(
    msgs.indexOf("plugin marker stopped") >
      msgs.indexOf("plugin exploder failed"),
  );
  assert.ok(!msgs.some((m) => m.startsWith("plexus listening")));
});

Deno.test("bad plugins: rollback leaves the marker file saying 'stopped'", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-it-" });
  const markerDir = await Deno.makeTempDir({ prefix: "plexus-it-marker-" });
  try {
    const marker = join(markerDir, "marker.txt");
    const config = await writeConfig(dir, {
      pluginConfig: { marker: { markerFile: marker } },
      pluginTrust: { marker: "trusted" },
    });
    const r = await runToExit({
      dir,
      allowWrite: [markerDir],
      args: [
        "--plugin",
        "./tests/fixtures/marker_plugin.ts",
        "--plugin",
        "./tests/fixtures/throwing_plugin.ts",
        "--config",
        config,
      ],
    });
    assert.equal(r.code, 1, r.stderr);
    assert.equal(await Deno.readTextFile(marker), "stopped");
  } finally {
    await Deno.remove(markerDir, { recursive: true });
  }
});
