import assert from "node:assert/strict";
import { openStore } from "./store.ts";
import { join } from "node:path";
import { serialize } from "node:v8";
import { ManualClock } from "../clock.ts";
import { sessionKey, sessionsBySubjectKey } from "./keys.ts";
import {
  createSessionStore,
  hashToken,
  MAX_VALUE_BYTES,
  type SessionStoreOptions,
} from "./sessions.ts";

async function withStore(
  options: SessionStoreOptions,
  fn: (
    ctx: {
      kv: Deno.Kv;
      clock: ManualClock;
      sessions: ReturnType<typeof createSessionStore>;
    },
  ) => Promise<void>,
) {
  const kv = await Deno.openKv(":memory:");
  const clock = options.clock as ManualClock ?? new ManualClock(1_000_000);
  try {
    await fn({
      kv,
      clock,
      sessions: createSessionStore(kv, { ...options, clock }),
    });
  } finally {
    kv.close();
  }
}

Deno.test("sessions: the raw token is never stored, only its hash", async () => {
  await withStore({}, async ({ kv, sessions }) => {
    const tokens: string[] = [];
    for (const kind of ["agent", "operator"] as const) {
      const { token, session } = await sessions.create({
        subject: "agent-1",
        kind,
        data: { roles: ["viewer"] },
        node: "node-a",
      });
      assert.match(token, /^[A-Za-z0-9_-]{43}$/);
      assert.equal(session.id, await hashToken(token));
      assert.notEqual(session.id, token);
      tokens.push(token);
      await sessions.touch(token);
    }
    let entries = 0;
    for await (const e of kv.list({ prefix: [] })) {
      entries++;
      const raw = JSON.stringify(e.key) + JSON.stringify(e.value) +
        new TextDecoder("latin1").decode(serialize(e.value));
      for (const token of tokens) assert.ok(!raw.includes(token), raw);
    }
    assert.equal(entries, 4); // two records, two index entries
  });
});

Deno.test("sessions: get returns the session and null for unknown or malformed tokens", async () => {
  await withStore({ defaultTtlMs: 10_000 }, async ({ clock, sessions }) => {
    const { token, session } = await sessions.create({
      subject: "op",
      kind: "operator",
      data: { roles: ["admin"] },
    });
    assert.deepEqual(await sessions.get(token), session);
    assert.deepEqual(session, {
      id: session.id,
      subject: "op",
      kind: "operator",
      createdAt: clock.now(),
      expiresAt: clock.now() + 10_000,
      lastSeen: clock.now(),
      ttlMs: 10_000,
      data: { roles: ["admin"] },
    });
    assert.equal(await sessions.get(token + "x"), null);
    assert.equal(await sessions.get(""), null);
    assert.equal(await sessions.get("x".repeat(10_000)), null);
    assert.equal(await sessions.get(session.id), null); // the hash is no token
  });
});

Deno.test("sessions: expiry is enforced on read while KV still holds the key", async () => {
  await withStore({}, async ({ kv, clock, sessions }) => {
    const { token, session } = await sessions.create({
      subject: "agent-1",
      kind: "agent",
      ttlMs: 5_000,
    });
    await clock.advance(4_999);
    assert.ok(await sessions.get(token));
    await clock.advance(1);
    assert.equal(await sessions.get(token), null);
    assert.equal(await sessions.touch(token), null);
    assert.deepEqual(await sessions.list("agent-1"), []);
    // The record is still there: expireIn only garbage-collects later.
    assert.ok((await kv.get(sessionKey(session.id))).value);
  });
});

Deno.test("sessions: touch slides the expiry and never passes the max lifetime", async () => {
  await withStore(
    { defaultTtlMs: 1_000, maxLifetimeMs: 2_500 },
    async ({ clock, sessions }) => {
      const { token, session } = await sessions.create({
        subject: "agent-1",
        kind: "agent",
      });
      const t0 = session.createdAt;
      await clock.advance(800);
      let s = await sessions.touch(token);
      assert.equal(s?.expiresAt, t0 + 1_800);
      assert.equal(s?.lastSeen, t0 + 800);
      await clock.advance(800); // past the original expiry
      s = await sessions.touch(token);
      assert.equal(s?.expiresAt, t0 + 2_500); // capped, not t0 + 2_600
      assert.deepEqual(await sessions.get(token), s);
      await clock.advance(899);
      assert.equal((await sessions.touch(token))?.expiresAt, t0 + 2_500);
      await clock.advance(1);
      assert.equal(await sessions.touch(token), null);
      assert.equal(await sessions.get(token), null);
    },
  );
});

Deno.test("sessions: touch with extendMs never shortens the expiry", async () => {
  await withStore({ defaultTtlMs: 10_000 }, async ({ clock, sessions }) => {
    const { token, session } = await sessions.create({
      subject: "a",
      kind: "agent",
    });
    assert.equal(
      (await sessions.touch(token, { extendMs: 1 }))?.expiresAt,
      session.expiresAt,
    );
    assert.equal(
      (await sessions.touch(token, { extendMs: 60_000 }))?.expiresAt,
      clock.now() + 60_000,
    );
  });
});

Deno.test("sessions: a ttl past the max lifetime is capped at creation", async () => {
  await withStore({ maxLifetimeMs: 1_000 }, async ({ sessions }) => {
    const { session } = await sessions.create({
      subject: "a",
      kind: "agent",
      ttlMs: 5_000,
    });
    assert.equal(session.expiresAt, session.createdAt + 1_000);
  });
});

Deno.test("sessions: concurrent touches all succeed and the longest extension wins", async () => {
  await withStore({ defaultTtlMs: 1_000 }, async ({ clock, sessions }) => {
    const { token } = await sessions.create({ subject: "a", kind: "agent" });
    const extends_ = Array.from({ length: 20 }, (_, i) => 2_000 + i * 1_000);
    // Shuffle so the longest is not simply the last to commit.
    extends_.sort((a, b) => ((a * 7919) % 13) - ((b * 7919) % 13));
    const results = await Promise.all(
      extends_.map((extendMs) => sessions.touch(token, { extendMs })),
    );
    assert.ok(results.every((s) => s !== null));
    assert.equal(
      (await sessions.get(token))?.expiresAt,
      clock.now() + Math.max(...extends_),
    );
  });
});

Deno.test("sessions: revoke removes the session and its index entry", async () => {
  await withStore({}, async ({ kv, sessions }) => {
    const { token, session } = await sessions.create({
      subject: "agent-1",
      kind: "agent",
    });
    const other = await sessions.create({ subject: "agent-1", kind: "agent" });
    assert.equal(await sessions.revoke(token), true);
    assert.equal(await sessions.get(token), null);
    assert.equal(await sessions.touch(token), null);
    assert.equal(await sessions.revoke(token), false);
    assert.equal(await sessions.revoke("nonsense"), false);
    assert.equal(
      (await kv.get(sessionsBySubjectKey("agent-1", session.id))).versionstamp,
      null,
    );
    assert.deepEqual(
      (await sessions.list("agent-1")).map((s) => s.id),
      [other.session.id],
    );
  });
});

Deno.test("sessions: list returns a subject's live sessions, oldest first", async () => {
  await withStore({}, async ({ clock, sessions }) => {
    const a = await sessions.create({ subject: "s", kind: "agent" });
    await clock.advance(10);
    const b = await sessions.create({ subject: "s", kind: "agent" });
    await clock.advance(10);
    await sessions.create({ subject: "s", kind: "agent", ttlMs: 5 });
    await sessions.create({ subject: "t", kind: "agent" });
    await clock.advance(10);
    assert.deepEqual(
      (await sessions.list("s")).map((s) => s.id),
      [a.session.id, b.session.id],
    );
    assert.deepEqual(await sessions.list("nobody"), []);
  });
});

Deno.test("sessions: revokeSubject removes more sessions than one atomic op or list batch holds", async () => {
  await withStore({}, async ({ kv, sessions }) => {
    const n = 1_100;
    const tokens: string[] = [];
    for (let i = 0; i < n; i++) {
      tokens.push(
        (await sessions.create({ subject: "busy", kind: "agent" })).token,
      );
    }
    const kept = await sessions.create({ subject: "calm", kind: "agent" });
    assert.equal(await sessions.revokeSubject("busy"), n);
    assert.deepEqual(await sessions.list("busy"), []);
    assert.equal(await sessions.get(tokens[0]), null);
    assert.equal(await sessions.get(tokens[n - 1]), null);
    assert.ok(await sessions.get(kept.token));
    let left = 0;
    for await (const _ of kv.list({ prefix: [] })) left++;
    assert.equal(left, 2);
    assert.equal(await sessions.revokeSubject("busy"), 0);
  });
});

Deno.test("sessions: revokeSubject batches within KV's key-size limit for long subjects", async () => {
  await withStore({}, async ({ sessions }) => {
    const subject = "\u0000".repeat(512);
    for (let i = 0; i < 120; i++) {
      await sessions.create({ subject, kind: "operator" });
    }
    assert.equal(await sessions.revokeSubject(subject), 120);
  });
});

Deno.test("sessions: bad inputs fail with errors that name the value", async () => {
  await withStore({}, async ({ sessions }) => {
    await assert.rejects(
      sessions.create({ subject: "", kind: "agent" }),
      (e) => e instanceof TypeError && /subject .*''/.test(e.message),
    );
    await assert.rejects(
      sessions.create({ subject: "x".repeat(600), kind: "agent" }),
      (e) => e instanceof RangeError && /600 bytes/.test(e.message),
    );
    await assert.rejects(
      // deno-lint-ignore no-explicit-any -- a caller without types
      sessions.create({ subject: "a", kind: "robot" as any }),
      (e) => e instanceof TypeError && /'robot'/.test(e.message),
    );
    for (const ttlMs of [0, -5, NaN, Infinity]) {
      await assert.rejects(
        sessions.create({ subject: "a", kind: "agent", ttlMs }),
        (e) =>
          e instanceof RangeError &&
          e.message.includes(`ttlMs must be a finite number > 0, got ${ttlMs}`),
      );
    }
    await assert.rejects(
      sessions.create({
        subject: "a",
        kind: "agent",
        data: "x".repeat(MAX_VALUE_BYTES),
      }),
      (e) =>
        e instanceof RangeError &&
        /is \d{5,} bytes; a KV value holds at most 65536/.test(e.message),
    );
    await assert.rejects(
      sessions.create({ subject: "a", kind: "agent", data: { f: () => 1 } }),
      (e) => e instanceof TypeError && /structured-cloneable/.test(e.message),
    );
    const { token } = await sessions.create({ subject: "a", kind: "agent" });
    await assert.rejects(
      sessions.touch(token, { extendMs: 0 }),
      (e) => e instanceof RangeError && /extendMs .* got 0/.test(e.message),
    );
    await assert.rejects(
      sessions.revokeSubject(""),
      TypeError,
    );
    assert.equal(await sessions.revokeSubject("a"), 1);
  });
  const kv = await Deno.openKv(":memory:");
  try {
    assert.throws(
      () => createSessionStore(kv, { defaultTtlMs: 0 }),
      (e) => e instanceof RangeError && /defaultTtlMs .* got 0/.test(e.message),
    );
    assert.throws(
      () => createSessionStore(kv, { maxLifetimeMs: -1 }),
      (e) =>
        e instanceof RangeError && /maxLifetimeMs .* got -1/.test(e.message),
    );
  } finally {
    kv.close();
  }
});

Deno.test("sessions: two KV handles on one file (two processes) share sessions", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "sessions.kv");
  const kvA = await openStore(path); // as nodes open it
  const kvB = await openStore(path);
  try {
    const clock = new ManualClock(5_000);
    const a = createSessionStore(kvA, { clock });
    const b = createSessionStore(kvB, { clock });
    const { token, session } = await a.create({
      subject: "agent-9",
      kind: "agent",
      node: "node-a",
    });
    assert.deepEqual(await b.get(token), session);
    await clock.advance(1_000);
    assert.equal((await b.touch(token))?.lastSeen, 6_000);
    assert.equal((await a.get(token))?.lastSeen, 6_000);
    assert.equal(await b.revoke(token), true);
    assert.equal(await a.get(token), null);
    assert.deepEqual(await a.list("agent-9"), []);
  } finally {
    kvA.close();
    kvB.close();
    await Deno.remove(dir, { recursive: true });
  }
});
