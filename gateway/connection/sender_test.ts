import assert from "node:assert/strict";
import {
  BATCH_FRAME_BYTES,
  BATCH_FRAME_TYPE,
  BATCH_WAIT_MS,
  RecordSender,
  sharedRecord,
} from "./sender.ts";
import {
  type OpenedRecord,
  readInnerRecord,
  RecordOpener,
  RecordSealer,
  SEALED_BATCH_TYPE,
} from "../../sdk/protocol/record.ts";

const KEY = new Uint8Array(32).fill(9);

function sender(
  batch: boolean | 2,
  sendBufferBytes = 1 << 20,
  batchWaitMs?: number,
) {
  const frames: Uint8Array[] = [];
  const socket = {
    readyState: WebSocket.OPEN as number,
    bufferedAmount: 0,
    send: (f: unknown) => void frames.push(f as Uint8Array),
  };
  const s = new RecordSender({
    socket,
    sealer: new RecordSealer(KEY),
    sid: "s1",
    from: "node:n1",
    to: "agent-1",
    config: { sendBufferBytes },
    maxFrame: 1 << 20,
    metrics: { message: () => {} },
    closed: () => false,
    slow: () => {},
    drained: () => {},
    batchWaitMs,
  });
  if (batch === 2) s.batchFrames(2);
  else if (batch) s.batchFrames();
  return { s, frames, socket };
}

/** The records of a frame, plain or batched. */
function split(frame: Uint8Array): Uint8Array[] {
  if (frame[0] !== BATCH_FRAME_TYPE) return [frame];
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const out: Uint8Array[] = [];
  for (let at = 1; at < frame.length;) {
    const len = v.getUint32(at);
    out.push(frame.subarray(at + 4, at + 4 + len));
    at += 4 + len;
  }
  return out;
}

const body = (i: number) => new TextEncoder().encode(String(i));

Deno.test("sender: records sealed in one microtask turn leave in one batched frame, in order; a lone record as a plain frame", async () => {
  const { s, frames } = sender(true);
  for (let i = 0; i < 5; i++) s.send({ type: "msg", id: `m-${i}` }, body(i));
  assert.equal(frames.length, 0, "held until the turn ends");
  await Promise.resolve();
  assert.equal(frames.length, 1);
  assert.equal(frames[0][0], BATCH_FRAME_TYPE);
  const opener = new RecordOpener(KEY);
  const ids = split(frames[0]).map((r) => opener.open(r).header.id);
  assert.deepEqual(ids, ["m-0", "m-1", "m-2", "m-3", "m-4"]);
  s.send({ type: "msg", id: "alone" }, body(5));
  await Promise.resolve();
  assert.equal(frames.length, 2);
  assert.equal(frames[1][0], 1, "a plain record (version 1)");
  assert.equal(opener.open(frames[1]).header.id, "alone");
});

Deno.test("sender: without batchFrames each record is its own frame at once; a batch never passes BATCH_FRAME_BYTES, a big record leaves alone, in order; flush() sends at once; pending bytes count as congestion", () => {
  const plain = sender(false);
  plain.s.send({ type: "msg", id: "a" }, body(1));
  plain.s.send({ type: "msg", id: "b" }, body(2));
  assert.equal(plain.frames.length, 2);
  const { s, frames } = sender(true);
  const quarter = new Uint8Array(BATCH_FRAME_BYTES / 4);
  for (let i = 0; i < 4; i++) s.send({ type: "msg", id: `q-${i}` }, quarter);
  assert.equal(frames.length, 1, "the 4th would not fit: the 3 before it left");
  assert.equal(split(frames[0]).length, 3);
  s.send({ type: "msg", id: "big" }, new Uint8Array(BATCH_FRAME_BYTES));
  assert.equal(frames.length, 3, "the waiting one first, then the big one");
  assert.equal(frames[1][0], 1, "q-3 alone: a plain frame");
  assert.equal(frames[2][0], 1, "big: a plain frame");
  const opener = new RecordOpener(KEY);
  const order = frames.flatMap(split).map((r) => opener.open(r).header.id);
  assert.deepEqual(order, ["q-0", "q-1", "q-2", "q-3", "big"]);
  assert.ok(
    frames.every((f) => f[0] === 1 || f.length <= 1 + BATCH_FRAME_BYTES),
  );
  const tight = sender(true, 100);
  tight.s.send({ type: "msg", id: "c" }, new Uint8Array(200));
  assert.equal(tight.s.congested, true, "pending bytes count");
  tight.s.flush();
  assert.equal(tight.frames.length, 1);
  tight.s.flush();
  assert.equal(tight.frames.length, 1, "nothing twice");
});

const ADDRESS = { sid: "s1", from: "node:n1", to: "agent-1" };

/** The records of any frame (plain or sealed batch), opened in order. */
function openAll(opener: RecordOpener, frame: Uint8Array): OpenedRecord[] {
  if (frame[0] !== SEALED_BATCH_TYPE) return [opener.open(frame)];
  const { plain, epoch, seq } = opener.openBatch(frame);
  const out: OpenedRecord[] = [];
  for (let at = 0; at < plain.length;) {
    const r = readInnerRecord(plain, at, { ...ADDRESS, epoch, seq });
    out.push(r.record);
    at = r.next;
  }
  return out;
}

Deno.test("sender: batchFrames(2) seals the records of one microtask turn once, as one sealed batch frame, in order, one sequence number a frame; inner headers leave out sid/from/to", async () => {
  const { s, frames } = sender(2);
  for (let i = 0; i < 5; i++) {
    s.send(
      { type: "msg", id: `m-${i}`, ch: "backend.agent-1.x", prio: 4 },
      body(i),
    );
  }
  assert.equal(frames.length, 0, "held until the turn ends");
  await Promise.resolve();
  assert.equal(frames.length, 1);
  assert.equal(frames[0][0], SEALED_BATCH_TYPE);
  const opener = new RecordOpener(KEY);
  const recs = openAll(opener, frames[0]);
  assert.deepEqual(recs.map((r) => r.header.id), [
    "m-0",
    "m-1",
    "m-2",
    "m-3",
    "m-4",
  ]);
  assert.deepEqual(recs.map((r) => new TextDecoder().decode(r.body)), [
    "0",
    "1",
    "2",
    "3",
    "4",
  ]);
  assert.deepEqual(
    [
      recs[0].header.sid,
      recs[0].header.from,
      recs[0].header.to,
      recs[0].header.prio,
    ],
    ["s1", "node:n1", "agent-1", 4],
  );
  assert.ok(!new TextDecoder().decode(recs[0].headerBytes).includes("sid"));
  assert.equal(recs[4].seq, 0, "one sequence number for the whole frame");
  s.send({ type: "msg", id: "alone" }, body(5));
  await Promise.resolve();
  assert.equal(frames.length, 2);
  assert.equal(
    frames[1][0],
    SEALED_BATCH_TYPE,
    "a lone record: a batch of one",
  );
  const [alone] = openAll(opener, frames[1]);
  assert.deepEqual([alone.header.id, alone.seq], ["alone", 1]);
  const sig = new Uint8Array(64).fill(7);
  s.send({ type: "msg", id: "signed" }, body(6), sig);
  await Promise.resolve();
  const [signed] = openAll(opener, frames[2]);
  assert.deepEqual(signed.signature, sig);
  assert.equal(
    new TextDecoder().decode(signed.headerBytes),
    JSON.stringify(s.header({ type: "msg", id: "signed" })),
    "a signed record keeps its full header, the bytes its signature covers",
  );
});

Deno.test("sender: batchFrames(2) keeps a frame under BATCH_FRAME_BYTES of inner records, sends a big record alone as a plain record after what waits, in order; pending bytes count as congestion; a closed socket gets nothing", () => {
  const { s, frames, socket } = sender(2);
  const quarter = new Uint8Array(BATCH_FRAME_BYTES / 4);
  for (let i = 0; i < 4; i++) s.send({ type: "msg", id: `q-${i}` }, quarter);
  assert.equal(frames.length, 1, "the 4th would not fit: the 3 before it left");
  s.send({ type: "msg", id: "big" }, new Uint8Array(BATCH_FRAME_BYTES));
  assert.equal(frames.length, 3, "the waiting one first, then the big one");
  assert.deepEqual(frames.map((f) => f[0]), [
    SEALED_BATCH_TYPE,
    SEALED_BATCH_TYPE,
    1,
  ]);
  const opener = new RecordOpener(KEY);
  const order = frames.flatMap((f) => openAll(opener, f)).map((r) =>
    r.header.id
  );
  assert.deepEqual(order, ["q-0", "q-1", "q-2", "q-3", "big"]);
  assert.ok(
    frames.every((f) => f[0] === 1 || f.length <= 32 + BATCH_FRAME_BYTES),
  );
  const tight = sender(2, 100);
  tight.s.send({ type: "msg", id: "c" }, new Uint8Array(200));
  assert.equal(tight.s.congested, true, "pending bytes count");
  tight.s.flush();
  assert.equal(tight.frames.length, 1);
  assert.equal(tight.s.congested, false);
  tight.s.flush();
  assert.equal(tight.frames.length, 1, "nothing twice");
  s.send({ type: "msg", id: "late" }, body(1));
  socket.readyState = WebSocket.CLOSED;
  s.flush();
  assert.equal(frames.length, 3, "nothing sent on a closed socket");
});

Deno.test("sender: sendShared gives every connection the same record but for its channel: an inner record from the shared tail with sealed batch frames, a full record otherwise", async () => {
  const shared = sharedRecord(
    { type: "msg", id: "b-1", prio: 4, mt: "notification", cid: "c" },
    body(1),
  );
  const want = {
    sid: "s1",
    from: "node:n1",
    to: "agent-1",
    ch: "backend.agent-1.alerts",
    type: "msg",
    id: "b-1",
    prio: 4,
    mt: "notification",
    cid: "c",
  };
  for (const batch of [2, true, false] as const) {
    const { s, frames } = sender(batch);
    s.sendShared("backend.agent-1.alerts", shared);
    s.sendShared(
      "backend.agent-1.alerts",
      sharedRecord({ ...shared.fields }, body(2)),
    );
    await Promise.resolve();
    const opener = new RecordOpener(KEY);
    const recs = frames.flatMap((f) =>
      f[0] === BATCH_FRAME_TYPE
        ? split(f).map((r) => opener.open(r))
        : openAll(opener, f)
    );
    assert.equal(recs.length, 2, `batch ${batch}`);
    assert.deepEqual({ ...recs[0].header }, want, `batch ${batch}`);
    assert.deepEqual(recs.map((r) => new TextDecoder().decode(r.body)), [
      "1",
      "2",
    ]);
    if (batch === 2) assert.equal(frames[0][0], SEALED_BATCH_TYPE);
  }
});

/** One turn of the event loop (timers included). */
const turn = () => new Promise((r) => setTimeout(r, 0));
const ids = (opener: RecordOpener, frame: Uint8Array) =>
  openAll(opener, frame).map((r) => r.header.id);

Deno.test("sender: while the socket has unsent bytes, records of later turns join the waiting frame; it leaves as ONE sealed batch frame, in order, once the socket drains", async () => {
  const { s, frames, socket } = sender(2, 1 << 20, 60_000);
  socket.bufferedAmount = 100; // the last frame is not written yet
  for (let i = 0; i < 3; i++) s.send({ type: "msg", id: `a-${i}` }, body(i));
  await Promise.resolve();
  await turn();
  await turn();
  const shared = sharedRecord({ type: "msg", id: "b-0" }, body(3));
  s.sendShared("alerts", shared);
  s.send({ type: "msg", id: "b-1" }, body(4));
  await turn();
  assert.equal(frames.length, 0, "nothing cut while the socket is behind");
  assert.ok(s.congested === false);
  socket.bufferedAmount = 0;
  while (frames.length === 0) await turn();
  await turn();
  assert.equal(frames.length, 1);
  assert.equal(frames[0][0], SEALED_BATCH_TYPE);
  const opener = new RecordOpener(KEY);
  assert.deepEqual(ids(opener, frames[0]), [
    "a-0",
    "a-1",
    "a-2",
    "b-0",
    "b-1",
  ]);
  // An empty socket: cut at the end of the turn, as before.
  s.send({ type: "msg", id: "c-0" }, body(5));
  await Promise.resolve();
  assert.equal(frames.length, 2);
  assert.deepEqual(ids(opener, frames[1]), ["c-0"]);
});

Deno.test("sender: a frame waiting for a socket that never drains is cut after BATCH_WAIT_MS, in order; batched frames of sealed records (batch 1) wait the same way", async () => {
  assert.ok(BATCH_WAIT_MS > 0 && BATCH_WAIT_MS <= 10);
  for (const batch of [2, true] as const) {
    const { s, frames, socket } = sender(batch);
    socket.bufferedAmount = 1; // never drains
    for (let i = 0; i < 4; i++) s.send({ type: "msg", id: `m-${i}` }, body(i));
    await Promise.resolve();
    assert.equal(frames.length, 0, "waits while the socket is behind");
    while (frames.length === 0) await turn();
    assert.equal(frames.length, 1);
    const opener = new RecordOpener(KEY);
    const got = batch === 2
      ? ids(opener, frames[0])
      : split(frames[0]).map((r) => opener.open(r).header.id);
    assert.deepEqual(got, ["m-0", "m-1", "m-2", "m-3"]);
  }
});

Deno.test("sender: while the socket is behind, a full BATCH_FRAME_BYTES frame is cut at once, and a big record leaves alone right after what waits; flush() sends what waits", async () => {
  const { s, frames, socket } = sender(2, 1 << 22, 60_000);
  socket.bufferedAmount = 1;
  const chunk = new Uint8Array(10_000).fill(120);
  let i = 0;
  while (frames.length === 0) {
    assert.ok(i < 10, "a frame is cut before 10 records of 10 KB");
    s.send({ type: "msg", id: `m-${i}` }, chunk);
    i++;
  }
  assert.ok(frames[0].length <= BATCH_FRAME_BYTES + 64);
  const opener = new RecordOpener(KEY);
  const first = ids(opener, frames[0]);
  assert.deepEqual(first, Array.from({ length: i - 1 }, (_, k) => `m-${k}`));
  s.send({ type: "msg", id: "big" }, new Uint8Array(BATCH_FRAME_BYTES + 1));
  assert.equal(frames.length, 3, "what waited, then the big one, at once");
  assert.deepEqual(ids(opener, frames[1]), [`m-${i - 1}`]);
  assert.equal(frames[2][0], 1, "the big one as a plain record");
  assert.equal(opener.open(frames[2]).header.id, "big");
  s.send({ type: "msg", id: "last" }, body(0));
  await turn();
  assert.equal(frames.length, 3, "still behind: waits");
  s.flush();
  assert.equal(frames.length, 4);
  assert.deepEqual(ids(opener, frames[3]), ["last"]);
  await turn();
  assert.equal(frames.length, 4, "nothing left to cut");
});
