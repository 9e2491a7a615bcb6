import assert from "node:assert/strict";
import {
  encodeFrame,
  MAX_FRAME,
  readFrames,
  streamPort,
} from "./stdio_port.ts";

/** A stream handing out `bytes` in chunks of the given sizes. */
function chunked(
  bytes: Uint8Array,
  sizes: number[],
): ReadableStream<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let at = 0;
  for (const n of sizes) {
    chunks.push(bytes.slice(at, at + n));
    at += n;
  }
  if (at < bytes.length) chunks.push(bytes.slice(at));
  return ReadableStream.from(chunks);
}

async function all(readable: ReadableStream<Uint8Array>): Promise<unknown[]> {
  const seen: unknown[] = [];
  for await (const m of readFrames(readable)) seen.push(m);
  return seen;
}

Deno.test("stdio_port: frames split at every byte, and many frames in one chunk, read back in order", async () => {
  const messages = [{ a: 1 }, "two", [3n], new Uint8Array([4, 5]), null];
  const bytes = new Uint8Array(
    await new Blob(messages.map(encodeFrame)).arrayBuffer(),
  );
  assert.deepEqual(await all(chunked(bytes, [bytes.length])), messages);
  assert.deepEqual(
    await all(chunked(bytes, Array(bytes.length).fill(1))),
    messages,
  );
  for (let cut = 1; cut < bytes.length; cut++) {
    assert.deepEqual(await all(chunked(bytes, [cut])), messages, `cut ${cut}`);
  }
});

Deno.test("stdio_port: the frames before an oversized one are delivered, then it fails; a stream ending inside a frame fails", async () => {
  const good = encodeFrame("ok");
  const bad = new Uint8Array(4);
  new DataView(bad.buffer).setUint32(0, MAX_FRAME + 1);
  const seen: unknown[] = [];
  await assert.rejects(async () => {
    for await (
      const m of readFrames(ReadableStream.from([
        new Uint8Array([...good, ...bad]),
      ]))
    ) seen.push(m);
  }, /over/);
  assert.deepEqual(seen, ["ok"]);
  await assert.rejects(
    all(ReadableStream.from([good.slice(0, good.length - 1)])),
    /ended inside a frame/,
  );

  const got: unknown[] = [];
  const { promise: ended, resolve } = Promise.withResolvers<string>();
  const port = streamPort(
    ReadableStream.from([new Uint8Array([...good, ...encodeFrame(2), ...bad])]),
    new WritableStream(),
    resolve,
  );
  port.onmessage = (ev) => void got.push(ev.data);
  assert.match(await ended, /bad frame: frame of \d+ bytes over/);
  assert.deepEqual(got, ["ok", 2]);
});
