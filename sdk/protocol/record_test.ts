import assert from "node:assert/strict";
import { createCipheriv } from "node:crypto";
import {
  BatchWriter,
  nextKey,
  readInnerRecord,
  RECORD_PREFIX_BYTES,
  RecordError,
  type RecordHeader,
  RecordOpener,
  RecordSealer,
  REPLAY_WINDOW,
  SEALED_BATCH_TYPE,
  TAG_BYTES,
} from "./record.ts";

const key = new Uint8Array(32).fill(7);
const header = (
  id: string,
  extra: Partial<RecordHeader> = {},
): RecordHeader => ({
  sid: "s1",
  from: "agent-1",
  to: "backend",
  ch: "agent.agent-1.telemetry",
  type: "msg",
  id,
  ...extra,
});
const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

function refused(fn: () => unknown, reason: RecordError["reason"]) {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof RecordError, String(err));
    assert.equal(err.reason, reason, err.message);
    return true;
  });
}

Deno.test("record: seal and open, with and without a detached signature", () => {
  const tx = new RecordSealer(key);
  const rx = new RecordOpener(key);
  const plain = rx.open(tx.seal(header("1", { prio: 7 }), bytes("hello")));
  assert.equal(text(plain.body), "hello");
  assert.deepEqual(plain.header, header("1", { prio: 7 }));
  assert.equal(plain.signature, undefined);
  assert.equal(plain.seq, 0);
  const sig = new Uint8Array(64).fill(9);
  const signed = rx.open(tx.seal(header("2"), bytes("audited"), sig));
  assert.deepEqual(signed.signature, sig);
  assert.equal(text(signed.body), "audited");
  assert.equal(text(signed.headerBytes), JSON.stringify(header("2")));
  const empty = rx.open(tx.seal(header("3"), new Uint8Array(0)));
  assert.equal(empty.body.length, 0);
});

Deno.test("record: every flipped byte is refused and does not disturb the window", () => {
  const tx = new RecordSealer(key);
  const frame = tx.seal(header("1"), bytes("payload"));
  const next = tx.seal(header("2"), bytes("next"));
  const rx = new RecordOpener(key);
  const reasons = new Set<string>();
  for (let i = 0; i < frame.length; i++) {
    const t = frame.slice();
    t[i] ^= 0x01;
    assert.throws(() => rx.open(t), (err: unknown) => {
      assert.ok(err instanceof RecordError, `byte ${i}: ${err}`);
      reasons.add(err.reason);
      return true;
    });
  }
  // Header bytes (routing) and ciphertext/tag fail authentication.
  assert.ok(reasons.has("bad-tag"));
  assert.ok(reasons.has("bad-version"));
  assert.equal(text(rx.open(frame).body), "payload");
  assert.equal(text(rx.open(next).body), "next");
});

Deno.test("record: a re-addressed header (another agent, channel or session) fails authentication", () => {
  const tx = new RecordSealer(key);
  const frame = tx.seal(header("1"), bytes("x"));
  const h = JSON.stringify(header("1"));
  for (
    const [from, to] of [
      ['"from":"agent-1"', '"from":"agent-2"'],
      ['"ch":"agent.agent-1.telemetry"', '"ch":"agent.agent-1.telemetrz"'],
      ['"sid":"s1"', '"sid":"s2"'],
    ]
  ) {
    const forged = h.replace(from, to);
    assert.equal(forged.length, h.length);
    const t = frame.slice();
    t.set(bytes(forged), RECORD_PREFIX_BYTES);
    refused(() => new RecordOpener(key).open(t), "bad-tag");
  }
});

Deno.test("record: replays are refused; reordering inside the window is accepted once; older is refused", () => {
  const tx = new RecordSealer(key);
  const frames = Array.from(
    { length: REPLAY_WINDOW + 10 },
    (_, i) => tx.seal(header(String(i)), bytes(String(i))),
  );
  const rx = new RecordOpener(key);
  rx.open(frames[0]);
  refused(() => rx.open(frames[0]), "replayed");
  rx.open(frames[5]);
  rx.open(frames[3]); // late but inside the window
  refused(() => rx.open(frames[3]), "replayed");
  refused(() => rx.open(frames[5]), "replayed");
  rx.open(frames[REPLAY_WINDOW + 9]);
  refused(() => rx.open(frames[4]), "too-old");
  rx.open(frames[REPLAY_WINDOW + 8]);
  refused(() => rx.open(frames[REPLAY_WINDOW + 8]), "replayed");
});

Deno.test("record: rekey after a count and after a time; the receiver follows one epoch at a time", () => {
  let now = 0;
  const tx = new RecordSealer(
    key,
    { afterMessages: 3, afterMs: 1000 },
    () => now,
  );
  const rx = new RecordOpener(key);
  for (let i = 0; i < 7; i++) rx.open(tx.seal(header(String(i)), bytes("x")));
  assert.equal(tx.epoch, 2);
  assert.equal(rx.epoch, 2);
  now += 1000;
  rx.open(tx.seal(header("t"), bytes("x")));
  assert.equal(tx.epoch, 3, "time-based rekey");
  // A receiver two epochs behind cannot follow (and must not guess).
  const skipping = new RecordSealer(nextKey(nextKey(key)));
  const lagging = new RecordOpener(key);
  const frame = skipping.seal(header("z"), bytes("x"));
  new DataView(frame.buffer, frame.byteOffset).setUint32(2, 2);
  refused(() => lagging.open(frame), "bad-epoch");
  // The other direction's key (a reflected record) does not open.
  refused(
    () =>
      new RecordOpener(new Uint8Array(32).fill(8)).open(
        new RecordSealer(key).seal(header("r"), bytes("x")),
      ),
    "bad-tag",
  );
});

Deno.test("record: size, truncation and malformed frames are refused before decryption", () => {
  const rx = new RecordOpener(key, { maxRecordBytes: 1024 });
  const tx = new RecordSealer(key);
  refused(
    () => rx.open(tx.seal(header("big"), new Uint8Array(2000))),
    "too-large",
  );
  const ok = tx.seal(header("1"), bytes("x"));
  refused(() => rx.open(ok.subarray(0, 20)), "malformed");
  const lying = ok.slice();
  new DataView(lying.buffer).setUint16(14, 4000);
  refused(() => rx.open(lying), "malformed");
  const flags = ok.slice();
  flags[1] = 0x80;
  refused(() => rx.open(flags), "malformed");
  assert.equal(text(rx.open(ok).body), "x", "the genuine record still opens");
  // A header that is authentic but not the right shape.
  const odd = new RecordSealer(key);
  const rx2 = new RecordOpener(key);
  refused(
    () =>
      rx2.open(
        odd.seal({ ...header("1"), sid: 5 as unknown as string }, bytes("x")),
      ),
    "malformed",
  );
});

Deno.test("record: a per-message signature covers the exact header bytes and content", async () => {
  const { signMessage, verifyMessageSignature } = await import("./channels.ts");
  const { encodeHeader } = await import("./record.ts");
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const pub = new Uint8Array(
    await crypto.subtle.exportKey("raw", pair.publicKey),
  );
  const h = header("s1");
  const sig = await signMessage(
    pair.privateKey,
    encodeHeader(h),
    bytes("audit me"),
  );
  const opened = new RecordOpener(key).open(
    new RecordSealer(key).seal(h, bytes("audit me"), sig),
  );
  assert.ok(
    await verifyMessageSignature(
      pub,
      opened.signature!,
      opened.headerBytes,
      opened.body,
    ),
  );
  assert.ok(
    !await verifyMessageSignature(
      pub,
      opened.signature!,
      encodeHeader(header("s2")),
      opened.body,
    ),
  );
  assert.ok(
    !await verifyMessageSignature(
      pub,
      opened.signature!,
      opened.headerBytes,
      bytes("audit mE"),
    ),
  );
});

Deno.test("record: a sequence number above 2^53 - 1 (never sent by a sealer) is refused", () => {
  const frame = new RecordSealer(key).seal(header("1"), bytes("x"));
  new DataView(frame.buffer, frame.byteOffset).setUint32(6, 0x20_0000);
  refused(() => new RecordOpener(key).open(frame), "malformed");
  assert.throws(
    () => new RecordSealer(key, { afterMessages: 2 ** 53 }),
    RangeError,
  );
});

/** A sequence-0 record of epoch 0 whose header is exactly `headerBytes`. */
function rawRecord(headerBytes: Uint8Array, body: Uint8Array): Uint8Array {
  const aad = new Uint8Array(RECORD_PREFIX_BYTES + headerBytes.length);
  aad[0] = 1;
  new DataView(aad.buffer).setUint16(14, headerBytes.length);
  aad.set(headerBytes, RECORD_PREFIX_BYTES);
  const c = createCipheriv("chacha20-poly1305", key, new Uint8Array(12), {
    authTagLength: 16,
  });
  c.setAAD(aad, { plaintextLength: body.length });
  const ct = c.update(body);
  c.final();
  const out = new Uint8Array(aad.length + ct.length + 16);
  out.set(aad);
  out.set(ct, aad.length);
  out.set(c.getAuthTag(), aad.length + ct.length);
  return out;
}

Deno.test("record: an authentic header that is not UTF-8 is refused; one holding U+FFFD opens", () => {
  const json = bytes(JSON.stringify(header("1", { ch: "agent.agent-1.X" })));
  const at = json.indexOf(0x58); // the X
  const invalid = json.slice();
  invalid[at] = 0xff; // never valid in UTF-8 (the lenient decoder gives U+FFFD)
  refused(
    () => new RecordOpener(key).open(rawRecord(invalid, bytes("x"))),
    "malformed",
  );
  const replacement = header("1", { ch: "agent.agent-1.\uFFFD" });
  const rec = new RecordOpener(key).open(
    rawRecord(bytes(JSON.stringify(replacement)), bytes("x")),
  );
  assert.deepEqual(rec.header, replacement);
  assert.equal(text(rec.body), "x");
});

Deno.test("record: frames cut from the shared slab never overlap, across slab boundaries; a big frame has its own buffer", () => {
  const tx = new RecordSealer(key);
  const rx = new RecordOpener(key);
  const frames = Array.from(
    { length: 600 }, // ~300 bytes each: several 64 KiB slabs
    (_, i) => tx.seal(header(`m${i}`), bytes(`${i}`.padStart(200, "."))),
  );
  const copies = frames.map((f) => f.slice());
  const big = tx.seal(header("big"), new Uint8Array(5000));
  assert.equal(big.byteOffset, 0);
  assert.equal(big.buffer.byteLength, big.length);
  const spans = new Map<ArrayBufferLike, [number, number][]>();
  for (const f of frames) {
    const list = spans.get(f.buffer) ?? [];
    for (const [a, b] of list) {
      assert.ok(f.byteOffset >= b || f.byteOffset + f.length <= a, "overlap");
    }
    list.push([f.byteOffset, f.byteOffset + f.length]);
    spans.set(f.buffer, list);
  }
  assert.ok(spans.size > 1, "more than one slab");
  for (const [i, f] of frames.entries()) {
    assert.deepEqual(f, copies[i], `frame ${i} unchanged by later seals`);
    assert.equal(text(rx.open(f).body), `${i}`.padStart(200, "."));
  }
  assert.equal(rx.open(big).body.length, 5000);
});

const node = (id: string, extra: Partial<RecordHeader> = {}): RecordHeader => ({
  sid: "s1",
  from: "node:n1",
  to: "agent-1",
  ch: "backend.agent-1.x",
  type: "msg",
  id,
  ...extra,
});
const context = { sid: "s1", from: "node:n1", to: "agent-1" };

function readAll(plain: Uint8Array) {
  const out = [];
  for (let at = 0; at < plain.length;) {
    const r = readInnerRecord(plain, at, context);
    out.push(r.record);
    at = r.next;
  }
  return out;
}

Deno.test("record: a sealed batch frame carries its inner records in order under one sequence number, the outer bytes authenticated and the inner headers encrypted", () => {
  const w = new BatchWriter(16);
  w.add(node("1", { prio: 7, mt: "notification" }), bytes("one"));
  const sig = new Uint8Array(64).fill(3);
  w.add(node("2"), bytes("two"), sig);
  w.add(node("3", { cid: "c-1", att: 2 }), bytes(""));
  assert.equal(w.count, 3);
  const tx = new RecordSealer(key);
  const rx = new RecordOpener(key);
  const frame = tx.sealBatch(w.bytes());
  assert.equal(frame[0], SEALED_BATCH_TYPE);
  assert.equal(frame.length, RECORD_PREFIX_BYTES + w.length + TAG_BYTES);
  assert.ok(
    !text(frame).includes("backend.agent-1.x"),
    "headers are encrypted",
  );
  const { plain, seq } = rx.openBatch(frame);
  assert.equal(seq, 0);
  const recs = readAll(plain);
  assert.deepEqual(recs.map((r) => r.header.id), ["1", "2", "3"]);
  assert.deepEqual(recs.map((r) => text(r.body)), ["one", "two", ""]);
  assert.deepEqual(recs[0].header, node("1", { prio: 7, mt: "notification" }));
  assert.deepEqual(recs[1].signature, sig);
  assert.equal(text(recs[1].headerBytes), JSON.stringify(node("2")));
  assert.equal(recs[2].header.cid, "c-1");
  // One sequence number a frame, shared with plain records.
  w.clear();
  assert.equal(w.length, 0);
  assert.equal(rx.open(tx.seal(node("4"), bytes("x"))).seq, 1);
  w.add(node("5"), bytes("y"));
  assert.equal(rx.openBatch(tx.sealBatch(w.bytes())).seq, 2);
});

Deno.test("record: a tampered, replayed, mistyped or truncated sealed batch frame is refused", () => {
  const w = new BatchWriter();
  w.add(node("1"), bytes("one"));
  w.add(node("2"), bytes("two"));
  const tx = new RecordSealer(key);
  const frame = tx.sealBatch(w.bytes());
  for (const at of [1, 5, 13, RECORD_PREFIX_BYTES + 2, frame.length - 1]) {
    const bad = frame.slice();
    bad[at] ^= 1;
    const rx = new RecordOpener(key);
    assert.throws(() => rx.openBatch(bad), RecordError, `byte ${at}`);
  }
  const rx = new RecordOpener(key);
  rx.openBatch(frame);
  refused(() => rx.openBatch(frame), "replayed");
  refused(() => new RecordOpener(key).open(frame), "bad-version");
  refused(
    () => new RecordOpener(key).openBatch(tx.seal(node("3"), bytes("z"))),
    "bad-version",
  );
  const plain = w.bytes().slice();
  refused(() => readAll(plain.subarray(0, plain.length - 1)), "malformed");
  const long = plain.slice();
  long[3] += 1; // the first length runs into the second record's prefix
  refused(() => readAll(long.subarray(0, long.length)), "malformed");
  refused(
    () => readInnerRecord(new Uint8Array([0, 0, 0, 2, 0, 0]), 0, context),
    "malformed",
  );
  const notJson = new BatchWriter();
  notJson.addJson("nope", bytes(""));
  refused(() => readAll(notJson.bytes()), "malformed");
  const noType = new BatchWriter();
  noType.addJson(JSON.stringify({ ch: "", id: "1" }), bytes(""));
  refused(() => readAll(noType.bytes()), "malformed");
});

Deno.test("record: sealed batch frames count one each towards the rekey schedule, and open across a rekey", () => {
  const tx = new RecordSealer(key, { afterMessages: 2 });
  const rx = new RecordOpener(key);
  const w = new BatchWriter();
  for (let i = 0; i < 5; i++) w.add(node(String(i)), bytes(String(i)));
  const epochs = [];
  for (let i = 0; i < 5; i++) {
    const { epoch } = rx.openBatch(tx.sealBatch(w.bytes()));
    epochs.push(epoch);
  }
  assert.deepEqual(
    epochs,
    [0, 0, 1, 1, 2],
    "2 frames (of 5 records each) an epoch",
  );
  assert.deepEqual(rx.openBatch(tx.sealBatch(w.bytes())).epoch, 2);
});

Deno.test("record: an ASCII inner record carries its body as text; a non-ASCII, invalid or signed one does not, and its header is read the same", () => {
  const w = new BatchWriter();
  const address = { sid: "s1", from: "node:n", to: "a" };
  const h = header("1", { ...address, ch: "backend.a.x" });
  w.add(h, bytes('{"n":1}'));
  w.add({ ...h, id: "2", note: "é" }, bytes('{"n":2}'));
  w.add({ ...h, id: "3" }, bytes('{"s":"ü"}'));
  w.add({ ...h, id: "4" }, new Uint8Array([0x7b, 0xff, 0x7d]));
  w.add({ ...h, id: "5" }, bytes("{}"), new Uint8Array(64).fill(0x41));
  w.add({ ...h, id: "6" }, new Uint8Array(0));
  const plain = w.bytes();
  const got: [string, unknown, string | undefined][] = [];
  for (let at = 0; at < plain.length;) {
    const { record, next } = readInnerRecord(plain, at, address);
    got.push([record.header.id, record.header.note, record.text]);
    at = next;
  }
  assert.deepEqual(got, [
    ["1", undefined, '{"n":1}'],
    ["2", "é", undefined],
    ["3", undefined, undefined],
    ["4", undefined, undefined],
    ["5", undefined, undefined],
    ["6", undefined, ""],
  ]);
});
