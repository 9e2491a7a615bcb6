import assert from "node:assert/strict";
import { BroadcastQueue } from "./broadcast.ts";

const bytes = (tag: number, len = 10) => new Uint8Array(len).fill(tag);

Deno.test("broadcast: each broadcast is sent exactly the retransmit limit times", () => {
  const q = new BroadcastQueue();
  q.enqueue("a", bytes(1));
  let sent = 0;
  for (let i = 0; i < 10; i++) sent += q.take(1400, 4).length;
  assert.equal(sent, 4);
  assert.equal(q.size, 0);
});

Deno.test("broadcast: a newer broadcast about the same member replaces the pending one", () => {
  const q = new BroadcastQueue();
  q.enqueue("a", bytes(1));
  q.enqueue("a", bytes(2));
  const out = q.take(1400, 3);
  assert.equal(out.length, 1);
  assert.equal(out[0][0], 2);
  assert.equal(q.size, 1);
});

Deno.test("broadcast: fewest-sent go first, newest first among equals", () => {
  const q = new BroadcastQueue();
  q.enqueue("old", bytes(1));
  q.take(1400, 5); // "old" sent once
  q.enqueue("x", bytes(2));
  q.enqueue("y", bytes(3));
  // Room for two: the two never-sent ones, newest first.
  assert.deepEqual(q.take(20, 5).map((b) => b[0]), [3, 2]);
  // Now all were sent once: newest first again.
  assert.deepEqual(q.take(30, 5).map((b) => b[0]), [3, 2, 1]);
});

Deno.test("broadcast: the byte budget is never exceeded and what does not fit waits", () => {
  const q = new BroadcastQueue();
  for (let i = 0; i < 20; i++) q.enqueue(`m${i}`, bytes(i, 100));
  const out = q.take(550, 3);
  assert.equal(out.length, 5);
  assert.equal(q.size, 20);
  let total = out.length;
  while (q.size > 0) {
    const batch = q.take(550, 3);
    assert.ok(batch.length <= 5);
    total += batch.length;
  }
  assert.equal(total, 60);
  assert.equal(q.size, 0);
});
