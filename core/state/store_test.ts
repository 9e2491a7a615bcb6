import assert from "node:assert/strict";
import { join } from "node:path";
import {
  checksPerCommit,
  isLockedError,
  isRemoteKv,
  openStore,
  retryLocked,
} from "./store.ts";
import { scopeKv } from "./scoped_kv.ts";

Deno.test("store: opens a file path, creating its folder, and the data survives reopening", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "nested", "plexus.kv");
    const kv = await openStore(path);
    await kv.set(["k"], "v");
    kv.close();
    const again = await openStore(path);
    assert.equal((await again.get(["k"])).value, "v");
    again.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("store: 'database is locked' is retried, other errors are not", async () => {
  let calls = 0;
  const v = await retryLocked(() => {
    if (++calls < 3) return Promise.reject(new Error("database is locked"));
    return Promise.resolve("ok");
  }, { baseDelayMs: 1 });
  assert.equal(v, "ok");
  assert.equal(calls, 3);
  calls = 0;
  await assert.rejects(
    retryLocked(() => {
      calls++;
      return Promise.reject(new Error("disk full"));
    }, { baseDelayMs: 1 }),
    /disk full/,
  );
  assert.equal(calls, 1);
  await assert.rejects(
    retryLocked(() => Promise.reject(new Error("database is locked")), {
      attempts: 2,
      baseDelayMs: 1,
    }),
    /locked/,
  );
  assert.ok(isLockedError(new Error("SQLITE_BUSY: database is locked")));
  assert.ok(
    isRemoteKv("http://127.0.0.1:4512") && !isRemoteKv("./data/plexus.kv"),
  );
});

Deno.test("store: three processes writing one file at once lose no write and see no 'database is locked'", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "shared.kv");
    const go = join(dir, "go");
    const child = new URL("./_store_contention_child.ts", import.meta.url);
    const run = (mode: string) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--unstable-kv",
          `--allow-read=${dir}`,
          `--allow-write=${dir}`,
          child.pathname,
          path,
          go,
          mode,
        ],
        stdout: "piped",
        stderr: "inherit",
      }).output();
    const children = [run("store"), run("store"), run("store")];
    await new Promise((r) => setTimeout(r, 300));
    await Deno.writeTextFile(go, "");
    const lines = (await Promise.all(children)).map((o) => {
      assert.equal(o.code, 0);
      return new TextDecoder().decode(o.stdout).trim();
    });
    // Every increment of every writer landed: 3 processes × 4 writers × 150.
    assert.deepEqual(lines, Array(3).fill("done 600 0"));
    const kv = await openStore(path);
    try {
      assert.equal((await kv.get(["n"])).value, 1800);
      assert.deepEqual(await Array.fromAsync(kv.list({ prefix: ["w"] })), []);
    } finally {
      kv.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("store: an unopenable path is an error naming it", async () => {
  const file = await Deno.makeTempFile();
  try {
    await assert.rejects(
      openStore(join(file, "x.kv")),
      /Cannot open Deno KV at '.*x\.kv'/,
    );
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("scoped kv: keys, lists and atomics stay under the prefix", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const a = scopeKv(kv, ["plugins", "a"]);
    const b = scopeKv(kv, ["plugins", "b"]);
    await a.set(["x"], 1);
    await b.set(["x"], 2);
    assert.equal((await a.get(["x"])).value, 1);
    assert.deepEqual((await a.get(["x"])).key, ["x"]);
    const first = await a.get(["x"]);
    assert.equal(
      (await a.atomic().check({ key: ["x"], versionstamp: first.versionstamp })
        .set(["x"], 3).sum(["n"], 5n).commit()).ok,
      true,
    );
    assert.equal(
      (await a.atomic().check({ key: ["x"], versionstamp: first.versionstamp })
        .set(["x"], 4).commit()).ok,
      false,
    );
    const listed = [];
    for await (const e of a.list({ prefix: [] })) listed.push([e.key, e.value]);
    assert.deepEqual(listed, [[["n"], new Deno.KvU64(5n)], [["x"], 3]]);
    await a.delete(["x"]);
    assert.equal((await kv.get(["plugins", "a", "x"])).value, null);
    assert.equal((await kv.get(["plugins", "b", "x"])).value, 2);
  } finally {
    kv.close();
  }
});

Deno.test("store: a local store takes 100 checks per commit, a KV Connect store or one opened elsewhere 10", async () => {
  const local = await openStore(":memory:");
  const other = await Deno.openKv(":memory:");
  try {
    assert.equal(checksPerCommit(local), 100);
    assert.equal(checksPerCommit(other), 10);
    // What the numbers stand for: 100 checks commit here, 101 do not.
    const op = local.atomic();
    for (let i = 0; i < 100; i++) {
      op.check({ key: ["k", i], versionstamp: null });
    }
    assert.equal((await op.commit()).ok, true);
  } finally {
    local.close();
    other.close();
  }
  const url = Deno.env.get("DENO_KV_URL");
  if (url) {
    const remote = await openStore(url);
    try {
      assert.equal(checksPerCommit(remote), 10);
      const op = remote.atomic();
      for (let i = 0; i < 11; i++) {
        op.check({ key: ["k", crypto.randomUUID()], versionstamp: null });
      }
      await assert.rejects(op.commit(), /Too many checks/);
    } finally {
      remote.close();
    }
  }
});
