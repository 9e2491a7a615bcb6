import assert from "node:assert/strict";
import {
  concatPacket,
  decodePacket,
  encodePacket,
  type GossipMessage,
} from "./codec.ts";

const all: GossipMessage[] = [
  { type: "ping", seq: 1, target: "node-b" },
  {
    type: "indirect-ping",
    seq: 2 ** 40,
    target: "node-c",
    targetAddr: "10.0.0.3:7946",
    nack: true,
  },
  { type: "ack", seq: 300 },
  { type: "nack", seq: 0 },
  { type: "alive", incarnation: 17, node: "nöde-ü", addr: "[::1]:7946" },
  { type: "suspect", incarnation: 3, node: "a", from: "b" },
  { type: "dead", incarnation: 4, node: "a", from: "a" },
  {
    type: "push-pull",
    join: true,
    reply: false,
    members: [
      { id: "a", addr: "a:1", incarnation: 0, state: "alive" },
      { id: "b", addr: "b:1", incarnation: 9, state: "left" },
    ],
  },
];

Deno.test("codec: every message type survives a round trip, alone and compounded", () => {
  for (const m of all) assert.deepEqual(decodePacket(encodePacket([m])), [m]);
  assert.deepEqual(decodePacket(encodePacket(all)), all);
  const parts = all.map((m) => encodePacket([m]));
  assert.deepEqual(decodePacket(concatPacket(parts)), all);
});

Deno.test("codec: a ping with a short id fits in a few bytes", () => {
  // type + seq varint + length + id: the datagram a driver sends.
  assert.equal(
    encodePacket([{ type: "ping", seq: 200, target: "n1" }]).length,
    6,
  );
});

Deno.test("codec: a truncated packet is rejected with the offset it failed at", () => {
  const bytes = encodePacket([{
    type: "alive",
    incarnation: 1,
    node: "abc",
    addr: "h:1",
  }]);
  assert.throws(
    () => decodePacket(bytes.subarray(0, bytes.length - 1)),
    (e: Error) =>
      e instanceof RangeError && /runs past the end/.test(e.message),
  );
  assert.throws(
    () => decodePacket(bytes.subarray(0, 2)),
    (e: Error) =>
      e instanceof RangeError && /truncated at byte 2/.test(e.message),
  );
});

Deno.test("codec: an unknown message type names the type and offset", () => {
  const bytes = concatPacket([
    encodePacket([{ type: "ack", seq: 1 }]),
    new Uint8Array([99]),
  ]);
  assert.throws(() => decodePacket(bytes), /unknown message type 99 at byte 2/);
});

Deno.test("codec: a negative or fractional number cannot be encoded", () => {
  assert.throws(() => encodePacket([{ type: "ack", seq: -1 }]), /got -1/);
  assert.throws(() => encodePacket([{ type: "ack", seq: 1.5 }]), /got 1.5/);
});
