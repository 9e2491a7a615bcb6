/**
 * A message port over a byte stream pair, for the `process` sandbox level:
 * each message is one frame, a 4-byte big-endian length and the message in
 * V8's structured-clone serialization (`node:v8`), so the child process and
 * the node exchange the same values a Worker's port carries.
 *
 * {@linkcode installChildPort} runs first in a sandboxed child process: it
 * makes `globalThis.__plexusPort` a port over stdin/stdout and sends
 * `console` output to stderr, so nothing but frames reaches stdout.
 *
 * @module
 */
import { deserialize, serialize } from "node:v8";
import type { Port } from "./rpc.ts";

/** Largest frame either way (a bigger one is a protocol error). */
export const MAX_FRAME = 64 << 20;

/** The frame of one message. */
export function encodeFrame(message: unknown): Uint8Array<ArrayBuffer> {
  const body = serialize(message);
  if (body.length > MAX_FRAME) {
    throw new RangeError(
      `message of ${body.length} bytes over the ${MAX_FRAME}-byte frame limit`,
    );
  }
  const frame = new Uint8Array(4 + body.length);
  new DataView(frame.buffer).setUint32(0, body.length);
  frame.set(body, 4);
  return frame;
}

/**
 * Reads frames from `readable` and yields each message; ends with the
 * stream. Throws on a frame over {@linkcode MAX_FRAME} or a stream that
 * ends inside a frame.
 *
 * @example Usage
 * ```ts
 * import { encodeFrame, readFrames } from "./stdio_port.ts";
 * import assert from "node:assert/strict";
 * const bytes = new Blob([encodeFrame({ a: 1 }), encodeFrame([2n])]).stream();
 * const seen = [];
 * for await (const m of readFrames(bytes)) seen.push(m);
 * assert.deepEqual(seen, [{ a: 1 }, [2n]]);
 * ```
 */
export async function* readFrames(
  readable: ReadableStream<Uint8Array>,
): AsyncGenerator<unknown> {
  let buf = new Uint8Array(0);
  for await (const chunk of readable) {
    const joined = new Uint8Array(buf.length + chunk.length);
    joined.set(buf);
    joined.set(chunk, buf.length);
    buf = joined;
    for (;;) {
      if (buf.length < 4) break;
      const len = new DataView(buf.buffer, buf.byteOffset).getUint32(0);
      if (len > MAX_FRAME) {
        throw new RangeError(`frame of ${len} bytes over ${MAX_FRAME}`);
      }
      if (buf.length < 4 + len) break;
      yield deserialize(buf.subarray(4, 4 + len));
      buf = buf.slice(4 + len);
    }
  }
  if (buf.length > 0) throw new Error("stream ended inside a frame");
}

/**
 * A {@linkcode Port} writing frames to `writable` and delivering the frames
 * read from `readable`; `onEnd` is told when the stream ends or breaks.
 */
export function streamPort(
  readable: ReadableStream<Uint8Array>,
  writable: WritableStream<Uint8Array>,
  onEnd: (why: string) => void,
): Port {
  const writer = writable.getWriter();
  let writing = Promise.resolve();
  const port: Port = {
    onmessage: null,
    postMessage(message: unknown) {
      const frame = encodeFrame(message);
      // Writes stay in order; a broken pipe ends the port.
      writing = writing.then(() => writer.write(frame)).catch((err) =>
        onEnd(`write failed: ${(err as Error).message}`)
      );
    },
  };
  (async () => {
    try {
      for await (const data of readFrames(readable)) {
        port.onmessage?.({ data } as MessageEvent);
      }
      onEnd("stream ended");
    } catch (err) {
      onEnd(`bad frame: ${(err as Error).message}`);
    }
  })();
  return port;
}

/**
 * In a sandboxed child process: the port to the node over stdin/stdout, as
 * `globalThis.__plexusPort`, with `console` moved to stderr. The process
 * exits when the node closes stdin.
 */
export function installChildPort(): void {
  const err = (...args: unknown[]) =>
    Deno.stderr.writeSync(
      new TextEncoder().encode(
        args.map((a) => typeof a === "string" ? a : Deno.inspect(a)).join(
          " ",
        ) + "\n",
      ),
    );
  console.log = err;
  console.info = err;
  console.debug = err;
  (globalThis as { __plexusPort?: Port }).__plexusPort = streamPort(
    Deno.stdin.readable,
    Deno.stdout.writable,
    () => Deno.exit(0),
  );
}
