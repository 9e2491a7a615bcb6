import assert from "node:assert/strict";
import { countCommits } from "../core/state/_count_commits.ts";
import { ManualClock } from "../core/clock.ts";
import { gatewayBodyKey } from "../core/state/keys.ts";
import {
  CHUNK_BYTES,
  INLINE_BODY_BYTES,
  Outbox,
  outboxQueueName,
} from "./outbox.ts";

async function count(kv: Deno.Kv, prefix: Deno.KvKey): Promise<number> {
  let n = 0;
  for await (const _ of kv.list({ prefix })) n++;
  return n;
}

Deno.test("outbox: one queue per agent and channel, named by a hash", () => {
  const a = outboxQueueName("agent-1", "policies");
  assert.equal(a, outboxQueueName("agent-1", "policies"));
  assert.notEqual(a, outboxQueueName("agent-1", "commands"));
  assert.notEqual(a, outboxQueueName("agent-2", "policies"));
  // No ambiguity between "a" + "b.c" and "a.b" + "c".
  assert.notEqual(outboxQueueName("a", "b.c"), outboxQueueName("a.b", "c"));
});

Deno.test("outbox: small bodies live in the message, large ones in chunks that go on discard", async () => {
  using kv = await Deno.openKv(":memory:");
  const outbox = new Outbox(kv);
  const small = new Uint8Array(INLINE_BODY_BYTES).fill(1);
  const large = Uint8Array.from(
    { length: 3 * CHUNK_BYTES + 5 },
    (_, i) => i * 7,
  );
  await outbox.put("a1", "policies", small, { priority: 1 });
  const id = await outbox.put("a1", "policies", large, { priority: 9 });
  const q = outbox.queue("a1", "policies");
  assert.equal(await count(kv, gatewayBodyKey(q.name, id)), 4);
  assert.equal(await outbox.depth("a1"), 2);
  assert.deepEqual(await outbox.channels("a1"), ["policies"]);
  const [d9, d1] = await q.claim(2, 1000);
  assert.equal(d9.id, id);
  assert.deepEqual(await outbox.body(q.name, d9.id, d9.payload), large);
  assert.equal(d1.payload.chunks, undefined);
  assert.deepEqual(await outbox.body(q.name, d1.id, d1.payload), small);
  await d9.ack();
  await outbox.discard(q.name, d9.id, d9.payload);
  assert.equal(await count(kv, gatewayBodyKey(q.name)), 0);
  assert.equal(await outbox.depth("a1"), 1);
});

Deno.test("outbox: a missing chunk reads as null; purge removes the agent's messages, bodies and index", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new ManualClock(1_000_000);
  const outbox = new Outbox(kv, { clock, ttlMs: 5000, maxAttempts: 2 });
  const body = new Uint8Array(2 * CHUNK_BYTES);
  const id = await outbox.put("a1", "policies", body, {
    messageType: "command",
    correlationId: "c-1",
    sender: "ops",
  });
  const q = outbox.queue("a1", "policies");
  const m = (await q.get(id))!;
  assert.equal(m.maxAttempts, 2);
  assert.deepEqual(
    { ...m.payload, body: undefined },
    {
      ch: "policies",
      mt: "command",
      cid: "c-1",
      sender: "ops",
      expiresAt: 1_005_000,
      bytes: body.length,
      chunks: 2,
      body: undefined,
    },
  );
  await kv.delete(gatewayBodyKey(q.name, id, 1));
  assert.equal(await outbox.body(q.name, id, m.payload), null);
  await outbox.put("a1", "commands", new Uint8Array(1));
  await outbox.purge("a1");
  assert.equal(await outbox.depth("a1"), 0);
  assert.deepEqual(await outbox.channels("a1"), []);
  assert.equal(await count(kv, ["queue", q.name]), 0);
  assert.equal(await count(kv, gatewayBodyKey(q.name)), 0);
});

/** A 1,700-character message id: keys ending in it are ~1.8 KB. */
const longId = (i: number) => `${i}-${"x".repeat(1_700)}`;

Deno.test("outbox: a 31 MiB body under a 1,700-character id is written, read back and discarded in commits within KV's limits", async () => {
  using kv = await Deno.openKv(":memory:");
  const outbox = new Outbox(kv, { ttlMs: 60_000 });
  const body = Uint8Array.from({ length: 31 << 20 }, (_, i) => i % 251);
  const id = await outbox.put("a1", "files", body, { id: longId(0) });
  const q = outbox.queue("a1", "files");
  const chunks = Math.ceil(body.length / CHUNK_BYTES);
  assert.equal(await count(kv, gatewayBodyKey(q.name, id)), chunks);
  const [d] = await q.claim(1, 60_000);
  assert.deepEqual(await outbox.body(q.name, d.id, d.payload), body);
  // 530 deletes of ~1.8 KB keys: over KV's 819,200 bytes in one commit
  // (before, the discard threw 'Total mutation size too large').
  await d.ack();
  await outbox.discard(q.name, d.id, d.payload);
  assert.equal(await count(kv, gatewayBodyKey(q.name)), 0);
});

Deno.test("outbox: purging an agent with 5,000 queued messages under 1,700-character ids deletes them all in commits within KV's limits", async () => {
  using kv = await Deno.openKv(":memory:");
  const outbox = new Outbox(kv);
  await outbox.put("a1", "policies", new Uint8Array(1), { id: longId(0) });
  const q = outbox.queue("a1", "policies");
  const payload = {
    ch: "policies",
    mt: "notification",
    expiresAt: Date.now() + 60_000,
    bytes: 1,
    body: new Uint8Array(1),
    sender: "test",
  };
  await q.enqueueMany(
    Array.from({ length: 4_999 }, (_, i) => ({
      payload,
      options: { id: longId(i + 1) },
    })),
  );
  assert.equal(await outbox.depth("a1"), 5_000);
  // Before: 500 deletes of ~1.8 KB keys a commit, and the purge threw.
  await outbox.purge("a1");
  assert.equal(await count(kv, ["queue", q.name]), 0);
  assert.deepEqual(await outbox.channels("a1"), []);
  assert.equal(await outbox.depth("a1"), 0);
});

Deno.test("outbox: a body whose chunk write fails part way is not stored: the put rejects and the chunks written go", async () => {
  using kv = await Deno.openKv(":memory:");
  // The third commit fails, after two commits of chunks landed.
  const { kv: failing } = countCommits(kv, (n) => {
    if (n === 3) throw new Error("disk full");
  });
  const outbox = new Outbox(failing);
  const body = new Uint8Array(40 * CHUNK_BYTES);
  await assert.rejects(outbox.put("a1", "files", body), /disk full/);
  const q = outbox.queue("a1", "files");
  assert.equal(await count(kv, gatewayBodyKey(q.name)), 0);
  assert.equal(await outbox.depth("a1"), 0);
});
