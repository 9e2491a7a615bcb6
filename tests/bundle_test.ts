/**
 * The single-file artifact: `deno bundle` output runs on its own, outside the
 * repo and without its deno.json, loads a plugin file next to it and serves.
 * The bundle cannot sandbox a plugin (it does not carry the sandbox's
 * module), so the plugin beside it runs only when set trusted, and a plugin
 * left at the default level is refused saying so.
 */
import assert from "node:assert/strict";
import { V8_FLAGS_ARG } from "../core/runtime_flags.ts";
import { join } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname;

async function waitForUrl(lines: ReadableStream<Uint8Array>): Promise<string> {
  const reader = lines.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    const m = /"url":"(http:\/\/[^"]+)"/.exec(buf);
    if (m) {
      reader.releaseLock();
      return m[1];
    }
  }
  throw new Error(`node never said where it listens; output:\n${buf}`);
}

Deno.test("bundle: dist/plexus.js runs alone with --no-config and loads a plugin beside it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-bundle-" });
  try {
    const out = join(dir, "plexus.js");
    const bundle = await new Deno.Command(Deno.execPath(), {
      args: ["bundle", "--platform=deno", "-o", out, "main.ts"],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(bundle.code, 0, new TextDecoder().decode(bundle.stderr));
    await Deno.writeTextFile(
      join(dir, "beside.js"),
      `export default { manifest: { name: "beside", version: "1.0.0", kind: "extension", api: "^1",
        provides: ["extension:beside"] }, setup: async () => ({ stop: async () => {} }) };\n`,
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        V8_FLAGS_ARG,
        "--no-config",
        "--unstable-kv",
        // The plugin's name is read in a Worker with no permissions.
        "--unstable-worker-options",
        "--allow-net=127.0.0.1",
        "--allow-read",
        `--allow-write=${dir}`,
        "--allow-env",
        out,
        "--port",
        "0",
        "--data-dir",
        join(dir, "data"),
        "--plugin",
        "./beside.js",
        "--plugin-trust",
        "beside=trusted",
        "--plugin",
        "builtin:examples/hello",
      ],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    try {
      const url = await waitForUrl(child.stdout);
      const res = await fetch(`${url}/health`);
      const body = await res.json();
      assert.equal(res.status, 200);
      // The gateway and the console are built-ins the bundle carries, on by default.
      assert.deepEqual(Object.keys(body.services).sort(), [
        "beside",
        "dashboard",
        "gateway",
        "hello",
        "kv",
      ]);
      // The console's page and script are in the bundle, not read from disk.
      const login = await fetch(`${url}/ui/login`);
      assert.match(await login.text(), /Plexus console/);
      const script = await fetch(`${url}/ui/app.js`);
      assert.match(await script.text(), /\/ws\/dashboard/);
      const greet = await fetch(`${url}/plugins/hello/greet/bundle`);
      assert.deepEqual(await greet.json(), { message: "hello, bundle" });
    } finally {
      child.kill("SIGTERM");
      const status = await child.status;
      await child.stderr.cancel();
      assert.equal(status.code, 0);
    }
    const refused = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        V8_FLAGS_ARG,
        "--no-config",
        "--unstable-kv",
        "--unstable-worker-options",
        "--allow-net=127.0.0.1",
        "--allow-read",
        `--allow-write=${dir}`,
        "--allow-env",
        out,
        "--port",
        "0",
        "--data-dir",
        join(dir, "data"),
        "--plugin",
        "./beside.js",
      ],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.notEqual(refused.code, 0);
    assert.match(
      new TextDecoder().decode(refused.stderr),
      /plugin 'beside' runs at level 'worker' \(the default for a plugin that is not built in\), but this node cannot start a sandbox: it runs from a bundle.*run the node from its source.*--plugin-trust beside=trusted/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
