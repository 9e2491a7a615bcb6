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
  const parse = frameParser();
  const out: unknown[] = [];
  for await (const chunk of readable) {
    try {
      parse(chunk, (message) => out.push(message));
    } finally {
      // The frames before a bad one are still the stream's.
      yield* out.splice(0);
    }
  }
  parse.end();
}

/**
 * Splits chunks into messages: each call takes the next chunk and hands
 * `onMessage` every message it completes, in order. Frames are decoded
 * where they lie in the chunk; only an incomplete frame's bytes are kept
 * (copied) for the next chunk.
 */
function frameParser():
  & ((
    chunk: Uint8Array,
    onMessage: (message: unknown) => void,
  ) => void)
  & { end(): void } {
  let rest: Uint8Array | undefined;
  const parse = (
    chunk: Uint8Array,
    onMessage: (message: unknown) => void,
  ) => {
    let buf = chunk;
    if (rest) {
      buf = new Uint8Array(rest.length + chunk.length);
      buf.set(rest);
      buf.set(chunk, rest.length);
      rest = undefined;
    }
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    let at = 0;
    while (buf.length - at >= 4) {
      const len = view.getUint32(at);
      if (len > MAX_FRAME) {
        throw new RangeError(`frame of ${len} bytes over ${MAX_FRAME}`);
      }
      if (buf.length - at < 4 + len) break;
      const body = buf.subarray(at + 4, at + 4 + len);
      at += 4 + len;
      onMessage(deserialize(body));
    }
    if (at < buf.length) rest = buf.slice(at);
  };
  return Object.assign(parse, {
    end() {
      if (rest) throw new Error("stream ended inside a frame");
    },
  });
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
      // Every message of a chunk is delivered in the same turn, with no
      // generator step between them.
      const parse = frameParser();
      for await (const chunk of readable) {
        parse(chunk, (data) => port.onmessage?.({ data } as MessageEvent));
      }
      parse.end();
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
