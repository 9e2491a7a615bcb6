/**
 * The `token` subcommand as a real process with only read, write to its
 * data dir and env permissions (no network: it must not start a server).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { decodeJwt, decodeProtectedHeader } from "jose";
import { createJwtAuthority } from "../../core/security/jwt.ts";
import { loadNodeKey, NODE_KEY_FILE } from "../../core/security/node_key.ts";
import { deadline, EXIT_TIMEOUT_MS, MAIN, REPO } from "./_process.ts";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** `deno run --allow-read --allow-write=DIR --allow-env main.ts token ARGS`. */
async function runToken(
  dir: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<Run> {
  // A private lockfile copy, so the child never rewrites the repo's.
  const lock = join(dir, "deno.lock");
  await Deno.copyFile(join(REPO, "deno.lock"), lock).catch(() => {});
  const inherited = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([k]) =>
      !k.startsWith("PLEXUS_")
    ),
  );
  const out = await deadline(
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        `--lock=${lock}`,
        "--allow-read",
        `--allow-write=${dir}`,
        "--allow-env",
        MAIN,
        "token",
        ...args,
      ],
      cwd: REPO,
      env: { ...inherited, NO_COLOR: "1", ...env },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output(),
    EXIT_TIMEOUT_MS,
    `plexus token ${args.join(" ")}`,
  );
  const text = new TextDecoder();
  return {
    code: out.code,
    stdout: text.decode(out.stdout),
    stderr: text.decode(out.stderr),
  };
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "plexus-token-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function oneLine(stderr: string): string {
  const lines = stderr.trim().split("\n");
  assert.equal(lines.length, 1, `exactly one stderr line, got:\n${stderr}`);
  assert.match(lines[0], /^plexus: /);
  return lines[0];
}

const JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

Deno.test("token: prints one JWT that verifies with the data dir's key and carries sub, role and exp", () =>
  withDir(async (dir) => {
    const before = Math.floor(Date.now() / 1000);
    const r = await runToken(dir, [
      "--role",
      "operator",
      "--ttl",
      "1h",
      "--sub",
      "ci",
      "--data-dir",
      dir,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.endsWith("\n"));
    const lines = r.stdout.split("\n");
    assert.deepEqual(
      lines.slice(1),
      [""],
      `exactly one stdout line:\n${r.stdout}`,
    );
    const token = lines[0];
    assert.match(token, JWT);

    const path = join(dir, NODE_KEY_FILE);
    if (Deno.build.os !== "windows") {
      assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    }
    const key = await loadNodeKey(path);
    assert.equal(decodeProtectedHeader(token).kid, key.kid);
    const kv = await Deno.openKv(":memory:");
    try {
      const claims = await createJwtAuthority(key, { kv }).verify(token);
      assert.equal(claims.sub, "ci");
      assert.equal(claims.role, "operator");
      assert.equal(claims.exp - claims.iat, 3600);
      assert.ok(claims.iat >= before - 1, "iat is now");
      assert.ok(claims.jti.length > 0);
    } finally {
      kv.close();
    }

    // The next run reuses the key: same kid, and both tokens verify.
    const again = await runToken(dir, [
      "--role",
      "viewer",
      "--ttl",
      "15m",
      "--sub",
      "dash",
      "--data-dir",
      dir,
    ]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(decodeProtectedHeader(again.stdout.trim()).kid, key.kid);
    assert.equal(decodeJwt(again.stdout.trim()).role, "viewer");
    assert.notEqual(decodeJwt(again.stdout.trim()).jti, decodeJwt(token).jti);
  }));

Deno.test("token: the data dir comes from PLEXUS_DATA_DIR or the config file when no flag is given", () =>
  withDir(async (dir) => {
    const fromEnv = join(dir, "env");
    const r = await runToken(dir, [
      "--role",
      "admin",
      "--ttl",
      "30s",
      "--sub",
      "x",
    ], { PLEXUS_DATA_DIR: fromEnv });
    assert.equal(r.code, 0, r.stderr);
    const key = await loadNodeKey(join(fromEnv, NODE_KEY_FILE));
    assert.equal(decodeProtectedHeader(r.stdout.trim()).kid, key.kid);

    const fromFile = join(dir, "file");
    const config = join(dir, "config.json");
    await Deno.writeTextFile(config, JSON.stringify({ dataDir: fromFile }));
    const c = await runToken(dir, [
      "--role",
      "admin",
      "--ttl",
      "30s",
      "--sub",
      "x",
      "--config",
      config,
    ]);
    assert.equal(c.code, 0, c.stderr);
    const fileKey = await loadNodeKey(join(fromFile, NODE_KEY_FILE));
    assert.equal(decodeProtectedHeader(c.stdout.trim()).kid, fileKey.kid);
  }));

const BAD: [string, string[], RegExp][] = [
  [
    "bad --role",
    ["--role", "root", "--ttl", "1h", "--sub", "ci"],
    /--role: expected one of admin, operator, analyst, viewer, got 'root'/,
  ],
  ["missing --role", ["--ttl", "1h", "--sub", "ci"], /--role/],
  [
    "bad --ttl",
    ["--role", "viewer", "--ttl", "soon", "--sub", "ci"],
    /--ttl: .*'soon'/,
  ],
  [
    "too long --ttl",
    ["--role", "viewer", "--ttl", "90d", "--sub", "ci"],
    /--ttl: .*'90d' is out of range/,
  ],
  ["missing --ttl", ["--role", "viewer", "--sub", "ci"], /--ttl/],
  ["missing --sub", ["--role", "viewer", "--ttl", "1h"], /--sub/],
  ["empty --sub", ["--role", "viewer", "--ttl", "1h", "--sub="], /--sub/],
  [
    "--sub without a value",
    ["--role", "viewer", "--ttl", "1h", "--sub"],
    /--sub/,
  ],
  ["an unknown flag", [
    "--role",
    "viewer",
    "--ttl",
    "1h",
    "--sub",
    "ci",
    "--port",
    "1",
  ], /unknown flag --port/],
];

for (const [what, args, message] of BAD) {
  Deno.test(`token: ${what} exits 2 with one stderr line naming the flag`, () =>
    withDir(async (dir) => {
      const r = await runToken(dir, [...args, "--data-dir", dir]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(oneLine(r.stderr), message);
      assert.equal(r.stdout, "", "nothing on stdout");
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), [
        "deno.lock",
      ], "no key made");
    }));
}

Deno.test({
  name: "token: a key file readable by others is refused, exit 1 naming it",
  ignore: Deno.build.os === "windows",
  fn: () =>
    withDir(async (dir) => {
      const ok = await runToken(dir, [
        "--role",
        "viewer",
        "--ttl",
        "1h",
        "--sub",
        "ci",
        "--data-dir",
        dir,
      ]);
      assert.equal(ok.code, 0, ok.stderr);
      await Deno.chmod(join(dir, NODE_KEY_FILE), 0o644);
      const r = await runToken(dir, [
        "--role",
        "viewer",
        "--ttl",
        "1h",
        "--sub",
        "ci",
        "--data-dir",
        dir,
      ]);
      assert.equal(r.code, 1);
      const line = oneLine(r.stderr);
      assert.match(line, /node-key\.jwk': mode 0644/);
      assert.match(line, /chmod 600/);
      assert.equal(r.stdout, "");
    }),
});

Deno.test("token: --help lists the flags and makes no key", () =>
  withDir(async (dir) => {
    for (const flag of ["--help", "-h"]) {
      const r = await runToken(dir, [flag, "--data-dir", dir]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, "");
      for (
        const listed of [
          "--role ROLE",
          "--ttl DURATION",
          "--sub NAME",
          "--data-dir DIR",
          "--config FILE.json",
          "-h, --help",
        ]
      ) {
        assert.ok(
          r.stdout.split("\n").some((l) => l.trimStart().startsWith(listed)),
          `--help lists ${listed}:\n${r.stdout}`,
        );
      }
      assert.match(r.stdout, /admin, operator, analyst, viewer/);
    }
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), [
      "deno.lock",
    ]);
  }));
