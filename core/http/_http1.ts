/**
 * The HTTP/1.1 pieces the listener needs for a connection's first request:
 * a strict head parser (RFC 9112; anything ambiguous is refused, never
 * guessed), request bodies framed by Content-Length or chunked coding, and a
 * response writer. Later requests on the connection are Deno's (hyper's).
 *
 * @module
 */

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A parse failure, answered with `status` and a closed connection. */
export class HeadError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = "HeadError";
  }
}

/** A parsed request head. */
export interface RequestHead {
  method: string;
  target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: number;
  headers: [string, string][];
  /** Request body framing. */
  body: { kind: "none" } | { kind: "length"; length: number } | {
    kind: "chunked";
  };
  /** Bytes read past the head (start of the body, or a pipelined request). */
  rest: Uint8Array;
  keepAlive: boolean;
  expectContinue: boolean;
  upgrade: boolean;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Field values: visible ASCII, obs-text, SP and HTAB; never CR, LF or NUL.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const TARGET = /^[\x21-\x7e]+$/;

function findHeadEnd(buf: Uint8Array, from: number, to: number): number {
  for (let i = Math.max(0, from - 3); i + 3 < to; i++) {
    if (
      buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 &&
      buf[i + 3] === 10
    ) return i;
  }
  return -1;
}

/**
 * Reads one request head from `conn`. Resolves `undefined` when the peer
 * closes before sending a byte; throws {@linkcode HeadError} for a head that
 * is malformed or larger than `maxBytes`.
 */
export async function readHead(
  conn: Deno.Conn,
  maxBytes: number,
): Promise<RequestHead | undefined> {
  // Most heads fit in 2 KiB; the buffer doubles up to the limit.
  let data = new Uint8Array(Math.min(2048, maxBytes + 4));
  let n = 0;
  while (true) {
    if (n === data.length) {
      if (data.length >= maxBytes + 4) {
        throw new HeadError(431, "request head too large");
      }
      const bigger = new Uint8Array(Math.min(data.length * 2, maxBytes + 4));
      bigger.set(data);
      data = bigger;
    }
    const r = await conn.read(data.subarray(n));
    if (r === null) {
      if (n === 0) return undefined;
      throw new HeadError(400, "connection closed inside the request head");
    }
    const end = findHeadEnd(data, n, n + r);
    n += r;
    if (end >= 0) {
      if (end > maxBytes) throw new HeadError(431, "request head too large");
      return parseHead(data.subarray(0, end), data.slice(end + 4, n));
    }
    if (n > maxBytes) throw new HeadError(431, "request head too large");
  }
}

/** Parses the bytes of a head (without its final CRLFCRLF). */
export function parseHead(bytes: Uint8Array, rest: Uint8Array): RequestHead {
  // Latin-1 keeps obs-text bytes one char each for the checks below.
  let text = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    text += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  // RFC 9112 2.2: a server may ignore empty lines before the request line.
  text = text.replace(/^(\r\n)+/, "");
  const lines = text.split("\r\n");
  const first = lines[0];
  const m = /^([^ ]+) ([^ ]+) HTTP\/1\.([01])$/.exec(first);
  if (!m) {
    if (/^PRI \* HTTP\/2\.0$/.test(first)) {
      throw new HeadError(505, "HTTP/2 without TLS is not served");
    }
    throw new HeadError(400, "malformed request line");
  }
  const [, method, target, minorText] = m;
  if (!TOKEN.test(method)) throw new HeadError(400, "malformed method");
  if (!TARGET.test(target)) throw new HeadError(400, "malformed target");
  const headers: [string, string][] = [];
  let contentLength: string | undefined;
  let transferEncoding: string | undefined;
  let host = 0;
  let connection = "";
  let upgradeHeader = "";
  let expect = "";
  if (lines.length - 1 > 100) {
    throw new HeadError(431, "too many header fields");
  }
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (line.includes("\n") || line.includes("\r")) {
      throw new HeadError(400, "bare CR or LF in the head");
    }
    if (line[0] === " " || line[0] === "\t") {
      throw new HeadError(400, "obsolete line folding");
    }
    const colon = line.indexOf(":");
    if (colon <= 0) throw new HeadError(400, "malformed header field");
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) throw new HeadError(400, "malformed header name");
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (!FIELD_VALUE.test(value) || value.includes("\0")) {
      throw new HeadError(400, "malformed header value");
    }
    const lower = name.toLowerCase();
    switch (lower) {
      case "content-length":
        for (const part of value.split(",")) {
          const v = part.trim();
          if (!/^\d{1,15}$/.test(v)) {
            throw new HeadError(400, "malformed content-length");
          }
          if (contentLength !== undefined && contentLength !== v) {
            throw new HeadError(400, "conflicting content-length");
          }
          contentLength = v;
        }
        break;
      case "transfer-encoding":
        transferEncoding = transferEncoding === undefined
          ? value
          : `${transferEncoding}, ${value}`;
        break;
      case "host":
        host++;
        break;
      case "connection":
        connection += `,${value.toLowerCase()}`;
        break;
      case "upgrade":
        upgradeHeader = value.toLowerCase();
        break;
      case "expect":
        expect = value.toLowerCase();
        break;
    }
    // One char per byte (a ByteString), as Deno's own server hands them on.
    headers.push([name, value]);
  }
  const minor = Number(minorText);
  if (minor === 1 && host !== 1) {
    throw new HeadError(400, host ? "more than one host" : "missing host");
  }
  let body: RequestHead["body"] = { kind: "none" };
  if (transferEncoding !== undefined) {
    // Both framings at once is the classic smuggling vector: refuse it.
    if (contentLength !== undefined) {
      throw new HeadError(400, "both content-length and transfer-encoding");
    }
    if (minor === 0) {
      throw new HeadError(400, "transfer-encoding in HTTP/1.0");
    }
    const codings = transferEncoding.toLowerCase().split(",").map((s) =>
      s.trim()
    );
    if (codings.length !== 1 || codings[0] !== "chunked") {
      throw new HeadError(501, "only transfer-encoding: chunked is served");
    }
    body = { kind: "chunked" };
  } else if (contentLength !== undefined && Number(contentLength) > 0) {
    body = { kind: "length", length: Number(contentLength) };
  }
  const tokens = connection.split(",").map((s) => s.trim());
  const keepAlive = minor === 1
    ? !tokens.includes("close")
    : tokens.includes("keep-alive");
  return {
    method,
    target,
    minor,
    headers,
    body,
    rest,
    keepAlive,
    expectContinue: minor === 1 && expect === "100-continue" &&
      body.kind !== "none",
    upgrade: tokens.includes("upgrade") && upgradeHeader !== "",
  };
}

/** Reads a request body off `conn`, starting with the head's leftover bytes. */
export class BodyReader {
  #buf: Uint8Array;
  #remaining: number; // bytes left in the current chunk, or of the body
  #chunked: boolean;
  #done: boolean;
  #started = false;
  /** Bytes read past the end of the body (a pipelined request). */
  extra: Uint8Array = new Uint8Array(0);

  constructor(
    private conn: Deno.Conn,
    head: RequestHead,
    private onFirstRead: () => Promise<void>,
  ) {
    this.#buf = head.rest;
    this.#chunked = head.body.kind === "chunked";
    this.#remaining = head.body.kind === "length" ? head.body.length : 0;
    this.#done = head.body.kind === "none";
    if (this.#done) this.extra = head.rest;
  }

  get done(): boolean {
    return this.#done;
  }

  async #fill(): Promise<void> {
    const chunk = new Uint8Array(16_384);
    const n = await this.conn.read(chunk);
    if (n === null) throw new HeadError(400, "connection closed inside body");
    const merged = new Uint8Array(this.#buf.length + n);
    merged.set(this.#buf);
    merged.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = merged;
  }

  async #line(max = 4096): Promise<string> {
    while (true) {
      const i = this.#buf.indexOf(10);
      if (i >= 0) {
        if (i === 0 || this.#buf[i - 1] !== 13) {
          throw new HeadError(400, "malformed chunk framing");
        }
        const line = dec.decode(this.#buf.subarray(0, i - 1));
        this.#buf = this.#buf.subarray(i + 1);
        return line;
      }
      if (this.#buf.length > max) {
        throw new HeadError(400, "chunk line too long");
      }
      await this.#fill();
    }
  }

  /** The next piece of the body, or `null` at its end. */
  async read(): Promise<Uint8Array | null> {
    if (this.#done) return null;
    if (!this.#started) {
      this.#started = true;
      await this.onFirstRead();
    }
    if (this.#chunked && this.#remaining === 0) {
      const sizeLine = (await this.#line()).split(";")[0].trim();
      if (!/^[0-9a-fA-F]{1,12}$/.test(sizeLine)) {
        throw new HeadError(400, "malformed chunk size");
      }
      const size = parseInt(sizeLine, 16);
      if (size === 0) {
        // Trailer fields are read and dropped, up to the empty line.
        let trailers = 0;
        while ((await this.#line()) !== "") {
          if (++trailers > 100) throw new HeadError(400, "too many trailers");
        }
        this.#done = true;
        this.extra = this.#buf;
        return null;
      }
      this.#remaining = size;
    }
    if (this.#buf.length === 0) await this.#fill();
    const take = Math.min(this.#remaining, this.#buf.length);
    const out = this.#buf.slice(0, take);
    this.#buf = this.#buf.subarray(take);
    this.#remaining -= take;
    if (this.#remaining === 0) {
      if (this.#chunked) {
        if ((await this.#line()) !== "") {
          throw new HeadError(400, "malformed chunk end");
        }
      } else {
        this.#done = true;
        this.extra = this.#buf;
      }
    }
    return out;
  }

  /** Reads and drops the rest of the body, up to `limit` bytes; false if more. */
  async drain(limit: number): Promise<boolean> {
    let seen = 0;
    while (!this.#done) {
      const piece = await this.read();
      if (piece === null) break;
      seen += piece.length;
      if (seen > limit) return false;
    }
    return true;
  }

  /** The body as a stream for a `Request`. */
  stream(): ReadableStream<Uint8Array> {
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        try {
          const piece = await this.read();
          if (piece === null) controller.close();
          else controller.enqueue(piece);
        } catch (err) {
          controller.error(err);
        }
      },
    }, { highWaterMark: 0 });
  }
}

const REASONS: Record<number, string> = {
  100: "Continue",
  101: "Switching Protocols",
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  301: "Moved Permanently",
  302: "Found",
  304: "Not Modified",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  409: "Conflict",
  413: "Content Too Large",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/** A bare error answer for a head that could not be parsed. */
export function errorBytes(status: number, message: string): Uint8Array {
  const body = JSON.stringify({
    error: { code: status === 431 ? "head_too_large" : "bad_request", message },
  });
  return enc.encode(
    `HTTP/1.1 ${status} ${REASONS[status] ?? "Error"}\r\n` +
      `content-type: application/json\r\ncontent-length: ${body.length}\r\n` +
      `connection: close\r\n\r\n${body}`,
  );
}

/**
 * Writes `res` to `conn` as HTTP/1.1. A body whose end arrives with its
 * first piece gets a Content-Length, any other is chunked. Resolves once
 * the last byte is written; rejects if the peer is gone.
 */
export async function writeResponse(
  conn: Deno.Conn,
  res: Response,
  opts: { head: boolean; close: boolean },
): Promise<void> {
  const status = res.status;
  let out = `HTTP/1.1 ${status} ${REASONS[status] ?? "Status"}\r\n`;
  let hasDate = false;
  for (const [name, value] of res.headers) {
    if (
      name === "content-length" || name === "transfer-encoding" ||
      name === "connection" || name === "keep-alive"
    ) continue;
    if (name === "date") hasDate = true;
    out += `${name}: ${value}\r\n`;
  }
  if (!hasDate) out += `date: ${new Date().toUTCString()}\r\n`;
  if (opts.close) out += "connection: close\r\n";
  const noBody = status === 204 || status === 304 || status < 200;
  const reader = res.body?.getReader();
  try {
    if (noBody || !reader) {
      if (!noBody) out += "content-length: 0\r\n";
      await writeAll(conn, enc.encode(out + "\r\n"));
      return;
    }
    const first = await reader.read();
    if (first.done) {
      await writeAll(conn, enc.encode(out + "content-length: 0\r\n\r\n"));
      return;
    }
    const second = await reader.read();
    if (second.done) {
      const head = enc.encode(
        out + `content-length: ${first.value.length}\r\n\r\n`,
      );
      await writeAll(conn, head);
      if (!opts.head) await writeAll(conn, first.value);
      return;
    }
    await writeAll(
      conn,
      enc.encode(out + "transfer-encoding: chunked\r\n\r\n"),
    );
    if (opts.head) return;
    let piece: ReadableStreamReadResult<Uint8Array> = first;
    let next: ReadableStreamReadResult<Uint8Array> | undefined = second;
    while (!piece.done) {
      if (piece.value.length > 0) {
        await writeAll(
          conn,
          enc.encode(`${piece.value.length.toString(16)}\r\n`),
        );
        await writeAll(conn, piece.value);
        await writeAll(conn, enc.encode("\r\n"));
      }
      piece = next ?? await reader.read();
      next = undefined;
    }
    await writeAll(conn, enc.encode("0\r\n\r\n"));
  } finally {
    reader?.cancel().catch(() => {});
  }
}
