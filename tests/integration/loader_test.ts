/**
 * Plugin specifiers with the real process: relative and absolute paths,
 * `file:` and `https:` URLs, a drop-in folder, `builtin:`, `npm:`, the
 * PLEXUS_PLUGINS variable, and the errors for forms that cannot load.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import {
  FIXTURES,
  plainPluginSource,
  type PlexusProcess,
  runToExit,
  startPlexus,
} from "./_process.ts";
import { makeCerts } from "../_certs.ts";

async function whoami(p: PlexusProcess, name: string): Promise<string> {
  const res = await p.fetch(`/plugins/${name}/whoami`);
  assert.equal(res.status, 200, `GET /plugins/${name}/whoami`);
  const body = await res.json();
  assert.equal(body.name, name);
  return body.url;
}

Deno.test("loader: relative, absolute, file:, https:, drop-in and builtin: plugins all load", async () => {
  const work = await Deno.makeTempDir({ prefix: "plexus-it-loader-" });
  const ac = new AbortController();
  let server: Deno.HttpServer<Deno.NetAddr> | undefined;
  let p: PlexusProcess | undefined;
  try {
    // Absolute path and file: URL, both outside the repository.
    const absPath = join(work, "abs", "abs_plugin.ts");
    await Deno.mkdir(join(work, "abs"));
    await Deno.writeTextFile(absPath, plainPluginSource("abs-path"));
    const urlPath = join(work, "url", "url_plugin.js");
    await Deno.mkdir(join(work, "url"));
    await Deno.writeTextFile(urlPath, plainPluginSource("file-url"));
    const fileUrl = pathToFileURL(urlPath).href;

    // Drop-in folder: a copied fixture, a sub-folder with mod.ts, and files
    // the scan must skip (they would break the boot if loaded).
    const drop = join(work, "plugins.d");
    await Deno.mkdir(join(drop, "folder-plugin"), { recursive: true });
    await Deno.copyFile(
      join(FIXTURES, "plain_plugin.ts"),
      join(drop, "plain.ts"),
    );
    await Deno.writeTextFile(
      join(drop, "folder-plugin", "mod.ts"),
      plainPluginSource("dropped-folder"),
    );
    await Deno.mkdir(join(drop, "not-a-plugin")); // no mod.ts: ignored
    for (const skipped of ["_private.ts", ".hidden.ts", "plain_test.ts"]) {
      await Deno.writeTextFile(join(drop, skipped), "export default 42;\n");
    }
    await Deno.writeTextFile(join(drop, "README.md"), "not code\n");

    // https: a local TLS server with a certificate from a throw-away CA that
    // the node is told to trust with `deno run --cert`.
    const certs = await makeCerts(work);
    const remoteSource = plainPluginSource("remote");
    let served = 0;
    server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      cert: await Deno.readTextFile(certs.cert),
      key: await Deno.readTextFile(certs.key),
      signal: ac.signal,
      onListen: () => {},
    }, (req) => {
      if (new URL(req.url).pathname !== "/remote_plugin.ts") {
        return new Response("not found", { status: 404 });
      }
      served++;
      return new Response(remoteSource, {
        headers: { "content-type": "application/typescript" },
      });
    });
    // A URL no earlier run used: Deno caches remote modules by URL across
    // runs, and a port reused by chance would load the cached copy without
    // fetching it (a CI run saw served = 0).
    const remoteUrl =
      `https://127.0.0.1:${server.addr.port}/remote_plugin.ts?run=${crypto.randomUUID()}`;

    p = await startPlexus({
      pluginsDir: drop,
      denoFlags: [`--cert=${certs.ca}`],
      args: [
        "--plugin",
        "./tests/fixtures/slow_plugin.ts",
        "--plugin",
        absPath,
        "--plugin",
        fileUrl,
        "--plugin",
        remoteUrl,
        "--plugin",
        "builtin:examples/hello",
        // The remote plugin is not pinned (tests/integration/pinned_test.ts
        // covers pins): this test is about loading by URL.
        "--allow-unpinned-plugins",
      ],
    });

    const list = await (await p.api("/api/v1/plugins")).json() as {
      name: string;
      status: string;
    }[];
    const byName = new Map(list.map((x) => [x.name, x.status]));
    assert.deepEqual(
      [...byName.keys()].sort(),
      [
        "abs-path",
        "dashboard", // built in, on by default
        "dropped-folder",
        "file-url",
        "gateway", // built in, on by default
        "hello",
        "plain",
        "remote",
        "slow",
      ],
      "exactly these plugins loaded (skipped files were skipped)",
    );
    for (const [name, status] of byName) {
      assert.equal(status, "running", `${name} is running`);
    }

    assert.equal(await whoami(p, "abs-path"), pathToFileURL(absPath).href);
    assert.equal(await whoami(p, "file-url"), fileUrl);
    assert.equal(await whoami(p, "remote"), remoteUrl);
    assert.ok(served >= 1, "the node fetched the plugin over https");
    assert.equal(
      await whoami(p, "plain"),
      pathToFileURL(join(drop, "plain.ts")).href,
      "the drop-in copy (not the fixture) was loaded",
    );
    assert.equal(
      await whoami(p, "dropped-folder"),
      pathToFileURL(join(drop, "folder-plugin", "mod.ts")).href,
    );
    const greet = await p.fetch("/plugins/hello/greet/loader");
    assert.deepEqual(await greet.json(), { message: "hello, loader" });
    const health = await (await p.fetch("/health")).json();
    assert.equal(health.status, "healthy");
    for (const name of byName.keys()) {
      assert.equal(health.services[name]?.status, "up", `${name} in /health`);
    }
  } finally {
    await p?.close();
    ac.abort();
    await server?.finished;
    await Deno.remove(work, { recursive: true });
  }
});

Deno.test("loader: PLEXUS_PLUGINS (comma-separated) loads plugins", async () => {
  const p = await startPlexus({
    env: {
      PLEXUS_PLUGINS:
        "builtin:examples/hello, ./tests/fixtures/plain_plugin.ts",
    },
  });
  try {
    const list = await (await p.api("/api/v1/plugins")).json() as {
      name: string;
    }[];
    assert.deepEqual(list.map((x) => x.name).sort(), [
      "dashboard",
      "gateway",
      "hello",
      "plain",
    ]);
    await whoami(p, "plain");
  } finally {
    await p.close();
  }
});

Deno.test("loader: an npm: package that is not a plugin is imported, refused and named", async () => {
  const r = await runToExit({
    args: ["--plugin", "npm:is-number@7.0.0", "--allow-unpinned-plugins"],
  });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /npm:is-number@7\.0\.0/);
  // The message describes the module's actual default export (a function),
  // which proves the package was really imported.
  assert.match(r.stderr, /default export must be a plugin object/);
  assert.match(r.stderr, /got a function/);
  assert.ok(!r.records.some((l) => l.msg.startsWith("plexus listening")));
});

const UNLOADABLE: [string, string, RegExp][] = [
  [
    "a bare path without ./",
    "plugins/examples/hello.ts",
    /cannot resolve plugin specifier 'plugins\/examples\/hello\.ts'/,
  ],
  [
    "an unsupported scheme",
    "ftp://127.0.0.1/plugin.ts",
    /cannot resolve plugin specifier 'ftp:\/\/127\.0\.0\.1\/plugin\.ts'/,
  ],
  [
    "an unknown builtin",
    "builtin:examples/nope",
    /unknown built-in plugin 'examples\/nope' \(built in: .*examples\/hello/,
  ],
  [
    "a missing file",
    "./tests/fixtures/no_such_plugin.ts",
    /\.\/tests\/fixtures\/no_such_plugin\.ts/,
  ],
];

for (const [what, spec, message] of UNLOADABLE) {
  Deno.test(`loader: ${what} exits non-zero with a clear message`, async () => {
    const r = await runToExit({ args: ["--plugin", spec] });
    assert.notEqual(r.code, 0, r.stderr);
    assert.match(r.stderr, message);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, `one stderr line:\n${r.stderr}`);
    assert.match(lines[0], /^plexus: /);
    assert.ok(!r.records.some((l) => l.msg.startsWith("plexus listening")));
  });
}
