/**
 * A real `main.ts` node running a third-party plugin in a Worker sandbox
 * (issue 16): `worker` unless the operator picks another level
 * (`--plugin-trust`), with the grants (`pluginGrants`); the plugin gets
 * exactly what it declared and was granted, the plugin list says so, and a
 * plugin asking for more than it was granted stops the start naming each
 * missing grant.
 */
import assert from "node:assert/strict";
import { runToExit, startPlexus, writeConfig } from "./_process.ts";
import { childPids, running } from "./_task.ts";

const PLUGIN = "./tests/fixtures/sandbox_plugin.ts";

Deno.test("sandbox: a plugin file with no pluginTrust entry runs at worker, with exactly its granted permissions, and /api/v1/plugins shows its level", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-sandbox-" });
  const config = await writeConfig(dir, {
    pluginGrants: { sandboxed: { env: ["PLEXUS_SANDBOX_PROBE"] } },
  });
  const p = await startPlexus({
    dir,
    // No --plugin-trust: worker is the default for a plugin not built in.
    args: ["--plugin", PLUGIN, "--config", config],
    env: { PLEXUS_SANDBOX_PROBE: "granted" },
  });
  try {
    const get = async (path: string) =>
      await (await fetch(`${p.url}/plugins/sandboxed${path}`)).json();
    assert.deepEqual(await get("/env"), { ok: true, value: "granted" });
    assert.deepEqual(await get("/home"), { ok: false, error: "NotCapable" });
    assert.deepEqual(await get("/read"), { ok: false, error: "NotCapable" });
    assert.deepEqual(await get("/fetch"), { ok: false, error: "NotCapable" });
    const list = await (await p.api("/api/v1/plugins")).json() as {
      name: string;
      trust: string;
      permissions: unknown;
    }[];
    const mine = list.find((x) => x.name === "sandboxed")!;
    assert.equal(mine.trust, "worker");
    assert.deepEqual(
      (mine.permissions as Record<string, unknown>).env,
      ["PLEXUS_SANDBOX_PROBE"],
    );
    assert.equal((mine.permissions as Record<string, unknown>).net, false);
    assert.equal(list.find((x) => x.name === "gateway")?.trust, "trusted");
    // The node itself is untouched.
    assert.equal((await fetch(`${p.url}/health`)).status, 200);
  } finally {
    await p.close();
  }
});

Deno.test("sandbox: a sandboxed plugin asking for more than it was granted stops the start, naming the missing grant", async () => {
  const r = await runToExit({
    args: ["--plugin", PLUGIN, "--plugin-trust", "sandboxed=worker"],
  });
  assert.notEqual(r.code, 0);
  assert.match(
    r.stderr + r.stdout,
    /plugin 'sandboxed' asks for more than it was granted: env: .*pluginGrants/,
  );
});

Deno.test("sandbox: --plugin-trust NAME=process runs the plugin in a child deno with only its granted flags; without --allow-run for deno the node refuses it, saying so", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-sandbox-" });
  const config = await writeConfig(dir, {
    pluginGrants: { sandboxed: { env: ["PLEXUS_SANDBOX_PROBE"] } },
  });
  const args = [
    "--plugin",
    PLUGIN,
    "--plugin-trust",
    "sandboxed=process",
    "--config",
    config,
  ];
  const refused = await runToExit({ args });
  assert.notEqual(refused.code, 0);
  assert.match(
    refused.stderr + refused.stdout,
    /trust level 'process' starts a child deno, so the node needs --allow-run=/,
  );
  const p = await startPlexus({
    dir,
    args,
    env: { PLEXUS_SANDBOX_PROBE: "granted" },
    denoFlags: [`--allow-run=${Deno.execPath()}`],
  });
  try {
    const get = async (path: string) =>
      await (await fetch(`${p.url}/plugins/sandboxed${path}`)).json();
    // The child gets the granted variable from the node, nothing else.
    assert.deepEqual(await get("/env"), { ok: true, value: "granted" });
    assert.deepEqual(await get("/home"), { ok: false, error: "NotCapable" });
    assert.deepEqual(await get("/read"), { ok: false, error: "NotCapable" });
    const list = await (await p.api("/api/v1/plugins")).json() as {
      name: string;
      trust: string;
    }[];
    assert.equal(list.find((x) => x.name === "sandboxed")?.trust, "process");
    if (Deno.build.os === "linux") {
      // The child leads its own process group (a terminal's Ctrl-C to the
      // node's group does not reach it), and it still dies with the node.
      const [child] = await childPids(p.child.pid);
      assert.ok(child, "the plugin's child process");
      const pgid = new TextDecoder().decode(
        (await new Deno.Command("ps", {
          args: ["-o", "pgid=", "-p", String(child)],
          stdout: "piped",
        }).output()).stdout,
      ).trim();
      assert.equal(Number(pgid), child);
      p.signal("SIGKILL");
      await p.status;
      const gone = Date.now() + 10_000;
      while ((await running([child])).length > 0) {
        assert.ok(Date.now() < gone, "the child outlived the SIGKILLed node");
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  } finally {
    await p.close();
  }
});
