import assert from "node:assert/strict";
import { FLAG_TCP_ONLY, FrameCodec } from "./frame.ts";

const SECRET = "frame-test-secret-0123456789";

Deno.test("frame: a sealed packet opens with its sender, flags and bytes", () => {
  const codec = new FrameCodec(SECRET);
  const packet = new Uint8Array([5, 4, 3, 2, 1]);
  const opened = codec.open(codec.seal("[::1]:7946", packet, FLAG_TCP_ONLY));
  assert.deepEqual(opened, {
    from: "[::1]:7946",
    packet,
    flags: FLAG_TCP_ONLY,
  });
});

Deno.test("frame: any flipped bit, a truncation or another secret fails the check", () => {
  const codec = new FrameCodec(SECRET);
  const frame = codec.seal("10.0.0.1:7946", new Uint8Array(40).fill(7));
  for (let i = 0; i < frame.length; i++) {
    const bad = frame.slice();
    bad[i] ^= 1;
    assert.equal(codec.open(bad), null, `bit flipped in byte ${i}`);
  }
  assert.equal(codec.open(frame.subarray(0, frame.length - 1)), null);
  assert.equal(codec.open(new Uint8Array(0)), null);
  assert.equal(new FrameCodec(SECRET + "x").open(frame), null);
});

Deno.test("frame: a short secret or an over-long address is refused with the value seen", () => {
  assert.throws(() => new FrameCodec("short"), /at least 16 characters, got 5/);
  assert.throws(
    () => new FrameCodec(SECRET).seal("h".repeat(300), new Uint8Array(1)),
    /at most 255 bytes, got 300/,
  );
});
