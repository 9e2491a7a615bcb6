import assert from "node:assert/strict";
import { Hono } from "hono";
import { ManualClock } from "../clock.ts";
import { createLogger } from "../observe/logger.ts";
import { createTestKernel } from "../testing.ts";
import {
  AUDIT_CHUNK_SPAN_MS,
  auditLog,
  listAudit,
  markUnchanged,
  outcomeOf,
  storeWithAudit,
} from "./audit.ts";

Deno.test("audit: mutating API calls are recorded in KV and the log, reads are not", async () => {
  await using t = await createTestKernel([]);
  const ok = await t.api("/api/v1/tasks", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "X-Request-Id": "req-audit-1",
    },
    body: JSON.stringify({ type: "echo", payload: 1 }),
  });
  assert.equal(ok.status, 202);
  const bad = await t.api("/api/v1/tasks", {
    method: "POST",
    body: "{nope",
  });
  assert.equal(bad.status, 400);
  const anonymous = await t.request("/api/v1/tasks", {
    method: "POST",
    body: JSON.stringify({ type: "echo" }),
  });
  assert.equal(anonymous.status, 401);
  const viewer = await t.api("/api/v1/tasks", {
    method: "POST",
    body: JSON.stringify({ type: "echo" }),
  }, "viewer");
  assert.equal(viewer.status, 403);
  await t.api("/api/v1/plugins");
  const records = await listAudit(t.kv);
  assert.deepEqual(
    records.map((r) => [r.method, r.route, r.status, r.outcome, r.principal]),
    [
      ["POST", "/api/v1/tasks", 202, "ok", "test"],
      ["POST", "/api/v1/tasks", 400, "failed", "test"],
      ["POST", "/api/v1/*", 401, "denied", "anonymous"],
      ["POST", "/api/v1/tasks", 403, "denied", "test"],
    ],
  );
  assert.equal(records[0].correlationId, "req-audit-1");
  const lines = t.logs.filter((r) => r.msg === "audit");
  assert.equal(lines.length, 4);
  assert.equal(
    (lines[0].audit as { correlationId: string }).correlationId,
    "req-audit-1",
  );
});

Deno.test("audit: outcomes", () => {
  assert.deepEqual([200, 202, 401, 403, 429, 400, 500].map(outcomeOf), [
    "ok",
    "ok",
    "denied",
    "denied",
    "denied",
    "failed",
    "failed",
  ]);
});

Deno.test("audit: calls within one millisecond list in call order", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const app = new Hono();
    app.use(
      "*",
      auditLog({
        kv,
        log: createLogger({ sinks: [] }),
        clock: new ManualClock(5),
      }),
    );
    app.post("/calls/:n", (c) => c.text("ok"));
    const calls = Array.from({ length: 40 }, (_, i) => `/calls/${i}`);
    for (const path of calls) {
      assert.equal((await app.request(path, { method: "POST" })).status, 200);
    }
    const records = await listAudit(kv);
    assert.ok(records.every((r) => r.at === 5), "all in one millisecond");
    assert.deepEqual(records.map((r) => r.path), calls);
    assert.deepEqual(
      (await listAudit(kv, { since: 5, limit: 3 })).map((r) => r.path),
      calls.slice(0, 3),
    );
    assert.deepEqual(await listAudit(kv, { since: 6 }), []);
  } finally {
    kv.close();
  }
});

Deno.test("audit: a group commit stores its records as few values, split by size and time span; listing by since and limit sees each record once, in order, old single-record values too", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new ManualClock(10_000);
  const audit = auditLog({
    kv,
    log: createLogger({ sinks: [] }),
    clock,
    lingerMs: 60_000,
  });
  const app = new Hono();
  app.use("*", audit);
  app.use("/c/big/*", async (c, next) => {
    c.set("principal" as never, { sub: "p".repeat(25_000) } as never);
    await next();
  });
  app.post("/c/*", (c) => {
    markUnchanged(c.req.raw);
    return c.text("ok");
  });
  // A record stored one per value, as before chunks (same key shape).
  const old = {
    id: "old",
    at: 9_000,
    principal: "p",
    method: "POST",
    route: "/c/*",
    path: "/c/old",
    status: 200,
    outcome: "ok",
  };
  await kv.set(["audit", 9_000, -1, "00000000000000000000"], old);
  // One group: 40 small calls at 10,000 ms, 3 with ~25 KB principals (over one
  // value's 60,000 bytes together), then 5 calls 1.5 s later (past one
  // value's time span).
  const paths: string[] = [];
  const call = async (path: string) => {
    paths.push(path);
    assert.equal((await app.request(path, { method: "POST" })).status, 200);
  };
  for (let i = 0; i < 40; i++) await call(`/c/${i}`);
  for (let i = 0; i < 3; i++) await call(`/c/big/${i}`);
  await clock.advance(AUDIT_CHUNK_SPAN_MS + 500);
  for (let i = 0; i < 5; i++) await call(`/c/late${i}`);
  await audit.drain();
  const values = await Array.fromAsync(kv.list({ prefix: ["audit"] }));
  // The old value, then the group's: split at the size (40 small + 2 big,
  // then 1 big) and at the time span (the 5 late ones).
  assert.equal(values.length, 4, `${values.length} values`);
  assert.ok(values.slice(1).every((v) => v.value instanceof Uint8Array));
  const all = await listAudit(kv, { limit: 1000 });
  assert.deepEqual(all.map((r) => r.path), ["/c/old", ...paths]);
  // From `since` inside a value keyed earlier: only the later records.
  const late = await listAudit(kv, { since: 10_000 + AUDIT_CHUNK_SPAN_MS });
  assert.deepEqual(late.map((r) => r.path), paths.slice(43));
  // A limit cuts across values, in order.
  assert.deepEqual(
    (await listAudit(kv, { since: 9_500, limit: 41 })).map((r) => r.path),
    paths.slice(0, 41),
  );
  assert.deepEqual(
    (await listAudit(kv, { limit: 2 })).map((r) => r.path),
    ["/c/old", "/c/0"],
  );
});

Deno.test("audit: a record keeps at most 4,096 characters of a path, so a long request line cannot fail its group's commit", async () => {
  using kv = await Deno.openKv(":memory:");
  const errors: unknown[] = [];
  const audit = auditLog({
    kv,
    log: createLogger({ sinks: [] }),
    onError: (err) => errors.push(err),
  });
  const app = new Hono();
  app.use("*", audit);
  app.post("/c/*", (c) => c.text("ok"));
  // Decoded to 40,000 quotes, 80,000 bytes of JSON escaped: over a KV value.
  const long = `/c/${"%22".repeat(40_000)}`;
  const path = decodeURIComponent(long);
  const [a, b] = await Promise.all([
    app.request(long, { method: "POST" }),
    app.request("/c/short", { method: "POST" }),
  ]);
  assert.deepEqual([a.status, b.status], [200, 200]);
  assert.deepEqual(errors, []);
  const records = await listAudit(kv);
  assert.deepEqual(records.map((r) => r.path).sort(), [
    `${path.slice(0, 4096)}…(${path.length} chars)`,
    "/c/short",
  ]);
});

/** A KV whose commits are counted and held until `open()`. */
function gatedKv(kv: Deno.Kv) {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let commits = 0;
  let committed!: () => void;
  const firstCommit = new Promise<void>((r) => (committed = r));
  const gated = {
    commitVersionstamp: () => kv.commitVersionstamp(),
    atomic() {
      const op = kv.atomic();
      const commit = op.commit.bind(op);
      op.commit = async () => {
        commits++;
        committed();
        await gate;
        return await commit();
      };
      return op;
    },
  } as unknown as Deno.Kv;
  return { kv: gated, open, firstCommit, commits: () => commits };
}

Deno.test("audit: concurrent calls share group commits, and none is answered before its record is stored", async () => {
  using kv = await Deno.openKv(":memory:");
  const g = gatedKv(kv);
  const app = new Hono();
  app.use("*", auditLog({ kv: g.kv, log: createLogger({ sinks: [] }) }));
  let handled = 0;
  let allHandled!: () => void;
  const everyCallHandled = new Promise<void>((r) => (allHandled = r));
  app.post("/calls/:n", (c) => {
    if (++handled === 50) allHandled();
    return c.text("ok");
  });
  const answered: number[] = [];
  const calls = Array.from(
    { length: 50 },
    (_, i) =>
      Promise.resolve(app.request(`/calls/${i}`, { method: "POST" })).then(
        (res) => {
          answered.push(i);
          return res.status;
        },
      ),
  );
  await g.firstCommit;
  // Every call has reached the audit (one more turn), the first commit still held.
  await everyCallHandled;
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(answered, [], "no call answered before its commit");
  g.open();
  assert.deepEqual(await Promise.all(calls), Array(50).fill(200));
  const records = await listAudit(kv, { limit: 1000 });
  assert.deepEqual(
    records.map((r) => r.path).sort(),
    Array.from({ length: 50 }, (_, i) => `/calls/${i}`).sort(),
  );
  // The calls that came while the first commit ran share the next one.
  assert.ok(g.commits() <= 3, `${g.commits()} commits for 50 calls`);
});

Deno.test("audit: a failed group commit is reported and its calls are still answered", async () => {
  using kv = await Deno.openKv(":memory:");
  const errors: unknown[] = [];
  const failing = {
    commitVersionstamp: () => kv.commitVersionstamp(),
    atomic() {
      const op = kv.atomic();
      op.commit = () => Promise.reject(new Error("disk full"));
      return op;
    },
  } as unknown as Deno.Kv;
  const app = new Hono();
  app.use(
    "*",
    auditLog({
      kv: failing,
      log: createLogger({ sinks: [] }),
      onError: (err) => errors.push(err),
    }),
  );
  app.post("/x", (c) => c.text("ok"));
  const statuses = await Promise.all(
    Array.from(
      { length: 5 },
      () => Promise.resolve(app.request("/x", { method: "POST" })),
    ).map(async (r) => (await r).status),
  );
  assert.deepEqual(statuses, [200, 200, 200, 200, 200]);
  assert.ok(errors.length >= 1 && errors.length <= 5);
  assert.match(String(errors[0]), /disk full/);
  assert.deepEqual(await listAudit(kv), []);
});

Deno.test("audit: a call marked unchanged is answered before its commit lands, and still recorded", async () => {
  using kv = await Deno.openKv(":memory:");
  const g = gatedKv(kv);
  const app = new Hono();
  app.use("*", auditLog({ kv: g.kv, log: createLogger({ sinks: [] }) }));
  app.post("/read", (c) => {
    markUnchanged(c.req.raw);
    return c.text("unchanged");
  });
  app.post("/write", (c) => c.text("changed"));
  let wrote = false;
  const write = Promise.resolve(app.request("/write", { method: "POST" }))
    .then((res) => {
      wrote = true;
      return res.status;
    });
  // The read is answered while the commit holding both records is held.
  const read = await app.request("/read", { method: "POST" });
  assert.equal(await read.text(), "unchanged");
  await g.firstCommit;
  assert.equal(wrote, false, "the changing call still waits for its record");
  g.open();
  assert.equal(await write, 200);
  assert.deepEqual(
    (await listAudit(kv)).map((r) => [r.path, r.status]).sort(),
    [["/read", 200], ["/write", 200]],
  );
});

Deno.test("audit: records of unchanged calls linger for a larger group; a waiting call or drain() commits them", async () => {
  using kv = await Deno.openKv(":memory:");
  const g = gatedKv(kv);
  g.open();
  const audit = auditLog({
    kv: g.kv,
    log: createLogger({ sinks: [] }),
    lingerMs: 60_000,
  });
  const app = new Hono();
  app.use("*", audit);
  app.post("/read/:n", (c) => {
    markUnchanged(c.req.raw);
    return c.text("unchanged");
  });
  app.post("/write", (c) => c.text("changed"));
  for (let i = 0; i < 5; i++) {
    assert.equal(
      (await app.request(`/read/${i}`, { method: "POST" })).status,
      200,
    );
  }
  assert.equal(g.commits(), 0, "answered, their records lingering");
  // A call that waits for its record takes the lingering ones along.
  assert.equal((await app.request("/write", { method: "POST" })).status, 200);
  assert.equal(g.commits(), 1);
  assert.equal((await listAudit(kv)).length, 6);
  for (let i = 5; i < 8; i++) {
    assert.equal(
      (await app.request(`/read/${i}`, { method: "POST" })).status,
      200,
    );
  }
  assert.equal(g.commits(), 1);
  await audit.drain();
  assert.equal(g.commits(), 2, "drain() commits what lingers");
  assert.deepEqual(
    (await listAudit(kv)).map((r) => r.path).sort(),
    [...Array.from({ length: 8 }, (_, i) => `/read/${i}`), "/write"].sort(),
  );
  await audit.drain(); // nothing left: returns at once
  assert.equal(g.commits(), 2);
  assert.throws(
    () => auditLog({ kv, log: createLogger({ sinks: [] }), lingerMs: -1 }),
    /lingerMs must be 0-60000 ms, got -1/,
  );
});

Deno.test("audit: a full group of unchanged records is committed without lingering", async () => {
  using kv = await Deno.openKv(":memory:");
  // Resolves landed[k] when the k-th commit (from 1) has landed.
  const landed = new Map<number, () => void>();
  const commitLanded = (k: number) =>
    new Promise<void>((r) => landed.set(k, r));
  let commits = 0;
  const counted = {
    commitVersionstamp: () => kv.commitVersionstamp(),
    atomic() {
      const op = kv.atomic();
      const commit = op.commit.bind(op);
      op.commit = async () => {
        const k = ++commits;
        const res = await commit();
        landed.get(k)?.();
        return res;
      };
      return op;
    },
  } as unknown as Deno.Kv;
  const second = commitLanded(2);
  const audit = auditLog({
    kv: counted,
    log: createLogger({ sinks: [] }),
    lingerMs: 60_000,
    maxGroup: 4,
  });
  const app = new Hono();
  app.use("*", audit);
  app.post("/read/:n", (c) => {
    markUnchanged(c.req.raw);
    return c.text("unchanged");
  });
  await Promise.all(
    Array.from(
      { length: 9 },
      (_, i) => Promise.resolve(app.request(`/read/${i}`, { method: "POST" })),
    ),
  );
  // Two full groups are committed at once; the ninth record lingers.
  await second;
  assert.equal((await listAudit(kv)).length, 8);
  assert.equal(commits, 2);
  await audit.drain();
  assert.equal(commits, 3);
  assert.equal((await listAudit(kv)).length, 9);
});

Deno.test("audit: storeWithAudit commits a handler's write with the call's record, in the plugin's keyspace, before the call is answered", async () => {
  using kv = await Deno.openKv(":memory:");
  const g = gatedKv(kv);
  const audit = auditLog({ kv: g.kv, log: createLogger({ sinks: [] }) });
  const scope = { prefix: ["plugins", "notes"] as Deno.KvKey };
  const app = new Hono();
  app.use("*", audit);
  const landed: Promise<boolean>[] = [];
  const raws: Request[] = [];
  let late: Promise<boolean> | undefined | "unset" = "unset";
  app.post("/note/:n", (c) => {
    const stored = storeWithAudit(c.req.raw, scope, ["n", c.req.param("n")], {
      text: `note ${c.req.param("n")}`,
    }, { expireIn: 60_000, bytes: 100 });
    assert.ok(stored, "open while the handler runs");
    landed.push(stored);
    // Even marked unchanged, a call with writes waits for them.
    markUnchanged(c.req.raw);
    raws.push(c.req.raw);
    return c.text("ok");
  });
  app.get("/read", (c) => {
    late = storeWithAudit(c.req.raw, scope, ["get"], 1);
    return c.text("read");
  });
  let answered = 0;
  const calls = [1, 2, 3].map((n) =>
    Promise.resolve(app.request(`/note/${n}`, { method: "POST" })).then(
      (res) => (answered++, res.status),
    )
  );
  await g.firstCommit;
  assert.equal(
    answered,
    0,
    "no call answered before the commit with its write",
  );
  // The records are built and committing: too late to join.
  late = storeWithAudit(raws[0], scope, ["late"], 1);
  assert.equal(late, undefined, "closed once the record is built");
  g.open();
  assert.deepEqual(await Promise.all(calls), [200, 200, 200]);
  assert.deepEqual(await Promise.all(landed), [true, true, true]);
  assert.equal(g.commits(), 1, "records and writes in one commit");
  assert.deepEqual((await kv.get(["plugins", "notes", "n", "2"])).value, {
    text: "note 2",
  });
  assert.equal((await listAudit(kv)).length, 3);
  assert.equal((await app.request("/read")).status, 200);
  assert.equal(late, undefined, "a GET is not audited: nothing to join");
});

Deno.test("audit: storeWithAudit's promise says false when the commit failed", async () => {
  using kv = await Deno.openKv(":memory:");
  const failing = {
    commitVersionstamp: () => kv.commitVersionstamp(),
    atomic() {
      const op = kv.atomic();
      op.commit = () => Promise.reject(new Error("disk full"));
      return op;
    },
  } as unknown as Deno.Kv;
  const errors: unknown[] = [];
  const app = new Hono();
  app.use(
    "*",
    auditLog({
      kv: failing,
      log: createLogger({ sinks: [] }),
      onError: (err) => errors.push(err),
    }),
  );
  let stored: Promise<boolean> | undefined;
  app.post("/x", (c) => {
    stored = storeWithAudit(c.req.raw, { prefix: ["p"] }, ["k"], 1);
    return c.text("ok");
  });
  assert.equal((await app.request("/x", { method: "POST" })).status, 200);
  assert.equal(await stored, false);
  assert.match(String(errors[0]), /disk full/);
  assert.equal((await kv.get(["p", "k"])).value, null);
});
