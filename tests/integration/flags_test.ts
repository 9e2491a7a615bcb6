/**
 * Command-line and environment errors of the real process: exit code 2 and
 * one stderr line naming the flag, variable or field; `--help` and
 * `--version`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runToExit, spawnPlexus, writeConfig } from "./_process.ts";

function oneLine(stderr: string): string {
  const lines = stderr.trim().split("\n");
  assert.equal(lines.length, 1, `exactly one stderr line, got:\n${stderr}`);
  assert.match(lines[0], /^plexus: /);
  return lines[0];
}

Deno.test("flags: --port abc exits 2 with one stderr line naming --port", async () => {
  const r = await runToExit({ port: "abc" });
  assert.equal(r.code, 2);
  const line = oneLine(r.stderr);
  assert.match(line, /--port/);
  assert.match(line, /abc/);
  assert.equal(r.stdout, "", "nothing on stdout");
});

Deno.test("flags: --port out of range exits 2 naming --port", async () => {
  const r = await runToExit({ port: "70000" });
  assert.equal(r.code, 2);
  assert.match(oneLine(r.stderr), /--port/);
});

Deno.test("flags: an unknown flag exits 2 naming it", async () => {
  const r = await runToExit({ args: ["--bogus"] });
  assert.equal(r.code, 2);
  assert.match(oneLine(r.stderr), /--bogus/);
});

Deno.test("flags: a flag without its value exits 2 naming it", async () => {
  const r = await runToExit({ args: ["--plugin"] });
  assert.equal(r.code, 2);
  assert.match(oneLine(r.stderr), /--plugin/);
});

Deno.test("flags: env PLEXUS_PORT=abc exits 2 naming PLEXUS_PORT", async () => {
  const r = await runToExit({ port: false, env: { PLEXUS_PORT: "abc" } });
  assert.equal(r.code, 2);
  const line = oneLine(r.stderr);
  assert.match(line, /PLEXUS_PORT/);
  assert.match(line, /abc/);
});

Deno.test("flags: a flag beats the environment, which beats the config file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-it-" });
  const config = await writeConfig(dir, {
    logLevel: "debug",
    nodeId: "from-file",
  });
  // env says error-only logging, the flag says info: info lines must appear.
  const p = await spawnPlexus({
    dir,
    env: { PLEXUS_LOG_LEVEL: "error", PLEXUS_NODE_ID: "from-env" },
    args: ["--config", config, "--log-level", "info"],
  });
  try {
    const line = await p.waitForLog(
      (l) => l.msg.startsWith("plexus listening"),
      "the info-level 'listening' line",
    );
    assert.equal(line.node, "from-env", "env beats the config file");
    assert.ok(
      !p.records.some((l) => l.level === "debug"),
      "the config file's debug level was overridden",
    );
  } finally {
    await p.close();
  }
});

Deno.test("flags: a port already in use exits 2 naming --port", async () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const r = await runToExit({ port: String(busy.addr.port) });
    assert.equal(r.code, 2, r.stderr);
    assert.match(oneLine(r.stderr), /--port/);
  } finally {
    busy.close();
  }
});

Deno.test("flags: bad config files exit 2 naming --config or the field", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-it-" });
  try {
    const broken = join(dir, "broken.json");
    await Deno.writeTextFile(broken, "{ not json");
    let r = await runToExit({ args: ["--config", broken] });
    assert.equal(r.code, 2);
    assert.match(oneLine(r.stderr), /--config/);

    r = await runToExit({ args: ["--config", join(dir, "missing.json")] });
    assert.equal(r.code, 2);
    assert.match(oneLine(r.stderr), /--config/);

    const typo = await writeConfig(dir, { shutdownTimoutMs: 5 }, "typo.json");
    r = await runToExit({ args: ["--config", typo] });
    assert.equal(r.code, 2);
    assert.match(oneLine(r.stderr), /shutdownTimoutMs/);

    const badType = await writeConfig(dir, { logLevel: "loud" }, "bad.json");
    r = await runToExit({ args: ["--config", badType] });
    assert.equal(r.code, 2);
    const line = oneLine(r.stderr);
    assert.match(line, /logLevel/);
    assert.match(line, /loud/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("flags: an unknown --transport exits 2 naming --transport", async () => {
  const r = await runToExit({ args: ["--transport", "carrier-pigeon"] });
  assert.equal(r.code, 2);
  const line = oneLine(r.stderr);
  assert.match(line, /--transport/);
  assert.match(line, /carrier-pigeon/);
});

Deno.test("flags: an unknown command exits 2", async () => {
  const r = await runToExit({ defaults: false, args: ["frobnicate"] });
  assert.equal(r.code, 2);
  assert.match(oneLine(r.stderr), /frobnicate/);
});

Deno.test("flags: --version prints the version", async () => {
  const r = await runToExit({ defaults: false, args: ["--version"] });
  assert.equal(r.code, 0);
  const denoJson = JSON.parse(
    await Deno.readTextFile(new URL("../../deno.json", import.meta.url)),
  );
  assert.equal(r.stdout.trim(), denoJson.version);
});

/** Contract flags (CONTRACTS.md) and the default `--help` must show. */
const CONTRACT_DEFAULTS: [string, string | undefined][] = [
  ["--port", "8086"],
  ["--host", "127.0.0.1"],
  ["--node-id", undefined],
  ["--kv", "./data/plexus.kv"],
  ["--plugin", undefined],
  ["--plugins-dir", "./plugins.d"],
  ["--transport", undefined],
  ["--consensus", undefined],
  ["--balancer", undefined],
  ["--peers", undefined],
  ["--config", undefined],
  ["--data-dir", "./data"],
];

for (const argv of [["--help"], ["serve", "--help"], ["serve", "-h"]]) {
  Deno.test(`flags: ${argv.join(" ")} lists every flag with its default`, async () => {
    const r = await runToExit({ defaults: false, args: argv });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    const lines = r.stdout.split("\n");
    for (const [flag, def] of CONTRACT_DEFAULTS) {
      const line = lines.find((l) => l.trimStart().startsWith(`${flag} `));
      assert.ok(line, `--help lists ${flag}:\n${r.stdout}`);
      if (def !== undefined) {
        assert.ok(
          line.includes(`default ${def}`),
          `${flag} shows default ${def}: ${line}`,
        );
      }
    }
    // Every value flag (other than --config, whose value is a file to read)
    // states its default.
    for (const l of lines) {
      const m = /^\s+(--[a-z-]+) VALUE/.exec(l);
      if (m) assert.match(l, /default /, `${m[1]} states its default`);
    }
  });
}
