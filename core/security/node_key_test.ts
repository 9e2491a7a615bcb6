import assert from "node:assert/strict";
import { join } from "node:path";
import { calculateJwkThumbprint, importJWK, jwtVerify, SignJWT } from "jose";
import {
  generateNodeKey,
  loadNodeKey,
  loadOrCreateNodeKey,
  NODE_KEY_FILE,
  NodeKeyError,
} from "./node_key.ts";

const POSIX = Deno.build.os !== "windows";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "plexus-nodekey-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name:
    "node key: created with mode 0600 and reused on the next load (same kid)",
  ignore: !POSIX,
  fn: () =>
    withDir(async (dir) => {
      const first = await loadOrCreateNodeKey(dir);
      const path = join(dir, NODE_KEY_FILE);
      assert.equal(first.path, path);
      assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
      const text = await Deno.readTextFile(path);
      const second = await loadOrCreateNodeKey(dir);
      assert.equal(second.kid, first.kid);
      assert.deepEqual(second.publicJwk, first.publicJwk);
      assert.equal(await Deno.readTextFile(path), text, "file not rewritten");
      assert.deepEqual(
        [...Deno.readDirSync(dir)].map((e) => e.name),
        [NODE_KEY_FILE],
        "no temporary files left behind",
      );
    }),
});

Deno.test({
  name: "node key: a missing data dir is created with mode 0700",
  ignore: !POSIX,
  fn: () =>
    withDir(async (dir) => {
      const dataDir = join(dir, "a", "b");
      await loadOrCreateNodeKey(dataDir);
      assert.equal((await Deno.stat(dataDir)).mode! & 0o777, 0o700);
    }),
});

for (const mode of [0o644, 0o640, 0o604, 0o660, 0o666]) {
  Deno.test({
    name: `node key: a key file with mode 0${
      mode.toString(8)
    } is refused with a clear message`,
    ignore: !POSIX,
    fn: () =>
      withDir(async (dir) => {
        const made = await loadOrCreateNodeKey(dir);
        await Deno.chmod(made.path!, mode);
        const text = await Deno.readTextFile(made.path!);
        for (
          const load of [
            () => loadOrCreateNodeKey(dir),
            () => loadNodeKey(made.path!),
          ]
        ) {
          await assert.rejects(load(), (err: Error) => {
            assert.ok(err instanceof NodeKeyError);
            assert.equal(err.path, made.path);
            assert.match(
              err.message,
              new RegExp(
                `^Refusing node key file '.*${NODE_KEY_FILE}': mode 0${
                  mode.toString(8)
                } lets group or others access the private key; run 'chmod 600 `,
              ),
            );
            return true;
          });
        }
        assert.equal(
          await Deno.readTextFile(made.path!),
          text,
          "left as it was",
        );
      }),
  });
}

Deno.test({
  name: "node key: an owner-only read-only key file (0400) is accepted",
  ignore: !POSIX,
  fn: () =>
    withDir(async (dir) => {
      const made = await loadOrCreateNodeKey(dir);
      await Deno.chmod(made.path!, 0o400);
      assert.equal((await loadOrCreateNodeKey(dir)).kid, made.kid);
    }),
});

Deno.test("node key: kid is the RFC 7638 thumbprint and the public JWK has no private part", async () => {
  const key = await generateNodeKey();
  const { kty, crv, x } = key.publicJwk;
  assert.equal(
    key.kid,
    await calculateJwkThumbprint({ kty, crv, x }, "sha256"),
  );
  assert.deepEqual(Object.keys(key.publicJwk).sort(), [
    "alg",
    "crv",
    "kid",
    "kty",
    "use",
    "x",
  ]);
  assert.equal(key.alg, "EdDSA");
  assert.equal(key.privateKey.extractable, false);
  await assert.rejects(crypto.subtle.exportKey("jwk", key.privateKey));
  assert.notEqual((await generateNodeKey()).kid, key.kid, "fresh keys differ");
});

Deno.test("node key: what it signs verifies with its published public JWK", async () => {
  const key = await generateNodeKey();
  const jwt = await new SignJWT({ a: 1 }).setProtectedHeader({ alg: "EdDSA" })
    .sign(key.privateKey);
  const { payload } = await jwtVerify(
    jwt,
    await importJWK(key.publicJwk, "EdDSA"),
  );
  assert.equal(payload.a, 1);
});

Deno.test("node key: processes racing to create it end up with one key", () =>
  withDir(async (dir) => {
    const keys = await Promise.all(
      Array.from({ length: 8 }, () => loadOrCreateNodeKey(dir)),
    );
    assert.equal(new Set(keys.map((k) => k.kid)).size, 1);
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name),
      [NODE_KEY_FILE],
    );
  }));

Deno.test("node key: malformed key files are refused naming the problem", () =>
  withDir(async (dir) => {
    const path = join(dir, NODE_KEY_FILE);
    const good = JSON.parse(
      await Deno.readTextFile((await loadOrCreateNodeKey(dir)).path!),
    );
    const other = JSON.parse(
      await Deno.readTextFile(
        (await loadOrCreateNodeKey(dir, { fileName: "other.jwk" })).path!,
      ),
    );
    const cases: [string, RegExp][] = [
      ["{not json", /is not valid JSON/],
      ["[]", /expected a JSON object/],
      [
        JSON.stringify({ ...good, kty: "RSA" }),
        /expected kty 'OKP', got 'RSA'/,
      ],
      [JSON.stringify({ ...good, crv: "X25519" }), /expected crv 'Ed25519'/],
      [JSON.stringify({ ...good, d: undefined }), /'d' must be 32 bytes/],
      [JSON.stringify({ ...good, x: "AAAA" }), /'x' must be 32 bytes/],
      [
        JSON.stringify({ ...good, x: other.x }),
        /'x' is not the public key of 'd'/,
      ],
    ];
    for (const [text, message] of cases) {
      await Deno.writeTextFile(path, text, { mode: 0o600 });
      await assert.rejects(loadOrCreateNodeKey(dir), (err: Error) => {
        assert.ok(err instanceof NodeKeyError, text);
        assert.match(err.message, message, text);
        assert.ok(err.message.includes(path), "names the file");
        return true;
      });
    }
  }));

Deno.test("node key: a folder where the key file should be is refused", () =>
  withDir(async (dir) => {
    await Deno.mkdir(join(dir, NODE_KEY_FILE), { mode: 0o700 });
    await assert.rejects(
      loadOrCreateNodeKey(dir),
      /node-key\.jwk' is not a regular file/,
    );
  }));

Deno.test("node key: loadNodeKey never creates a key", () =>
  withDir(async (dir) => {
    await assert.rejects(
      loadNodeKey(join(dir, NODE_KEY_FILE)),
      (err: Error) =>
        err instanceof NodeKeyError && /does not exist/.test(err.message),
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  }));
