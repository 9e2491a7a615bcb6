/**
 * A minimal Redis connection (RESP2) for one command at a time: the
 * subscription's blocking `XREADGROUP`.
 *
 * Why not ioredis for it: a blocking read needs none of a client's command
 * queues, offline queue or auto-pipelining, and its reply can be decoded in
 * one pass from one reused buffer once it has all arrived. Reading this way,
 * `bench/redis_streams.ts` went from 0.70–0.84 of raw ioredis to 0.89–1.03
 * (alternated runs, bench/README). Publishing, acks and the rest stay on
 * ioredis, which pipelines them.
 *
 * Not a general client: no pipelining, no pub/sub, no RESP3. TLS as
 * `Deno.connectTls` does it (the system's roots, `DENO_CERT`, `caCerts`). A
 * lost connection fails the command in flight; the next command connects
 * again.
 *
 * @module
 */

/** A RESP2 reply: strings decoded as UTF-8 (bad bytes as U+FFFD, as ioredis does). */
export type RespValue = string | number | null | RespValue[];

/** An error reply (`-ERR …`): the message is Redis's. */
export class RespError extends Error {
  override name = "RespError";
}

/** Where and how to connect. */
export interface RespOptions {
  /** @default {"127.0.0.1"} */
  host?: string;
  /** @default {6379} */
  port?: number;
  /** A Unix socket instead of host and port. */
  path?: string;
  /** ACL user (Redis 6+), with `password`. */
  username?: string;
  /** `AUTH` on connect when set. */
  password?: string;
  /** `SELECT` on connect when not 0. @default {0} */
  db?: number;
  /** Longest wait for a connection. @default {5000} */
  connectTimeoutMs?: number;
  /**
   * TLS: the server's certificate is checked for `host` against the
   * system's roots, those `DENO_CERT` names, and `caCerts` (PEM).
   */
  tls?: { caCerts?: string[] };
}

const CR = 13;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One request in RESP: an array of bulk strings. */
export function encodeCommand(args: readonly (string | number)[]): Uint8Array {
  let s = `*${args.length}\r\n`;
  for (const a of args) {
    const v = String(a);
    s += `$${utf8Length(v)}\r\n${v}\r\n`;
  }
  return encoder.encode(s);
}

function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d < 0xe000) {
        n += 2; // a pair: 4 bytes for 2 code units
        i++;
      } else n += 2; // a lone surrogate: U+FFFD, 3 bytes
    } else n += 2;
  }
  return n;
}

function intAt(buf: Uint8Array, from: number, to: number): number {
  let n = 0;
  let neg = false;
  let i = from;
  if (buf[i] === 45) {
    neg = true;
    i++;
  }
  for (; i < to; i++) n = n * 10 + (buf[i] - 48);
  return neg ? -n : n;
}

function crAt(buf: Uint8Array, from: number, end: number): number {
  for (let i = from; i + 1 < end; i++) if (buf[i] === CR) return i;
  return -1;
}

/**
 * Where the reply at `from` ends, or -1 when it has not all arrived: a scan
 * of its header lines only, so nothing is decoded twice while a large reply
 * comes in.
 */
export function replyEnd(buf: Uint8Array, end: number, from = 0): number {
  let at = from;
  let pending = 1; // replies still to pass
  while (pending > 0) {
    if (at >= end) return -1;
    const cr = crAt(buf, at + 1, end);
    if (cr < 0) return -1;
    pending--;
    const type = buf[at];
    if (type === 36) { // '$'
      const len = intAt(buf, at + 1, cr);
      at = len < 0 ? cr + 2 : cr + 2 + len + 2;
    } else {
      if (type === 42) pending += Math.max(0, intAt(buf, at + 1, cr));
      at = cr + 2;
    }
  }
  return at <= end ? at : -1;
}

/**
 * Decodes the whole reply at `at.i` (which {@linkcode replyEnd} found
 * complete) and moves `at.i` past it. An error inside an array is returned
 * in the array's place.
 */
export function decodeReply(
  buf: Uint8Array,
  at: { i: number },
): RespValue | RespError {
  const start = at.i;
  const type = buf[start];
  const cr = crAt(buf, start + 1, buf.length);
  if (cr < 0) throw new Error("Redis reply cut short");
  at.i = cr + 2;
  switch (type) {
    case 43: // '+'
      return decoder.decode(buf.subarray(start + 1, cr));
    case 45: // '-'
      return new RespError(decoder.decode(buf.subarray(start + 1, cr)));
    case 58: // ':'
      return intAt(buf, start + 1, cr);
    case 36: { // '$'
      const len = intAt(buf, start + 1, cr);
      if (len < 0) return null;
      at.i = cr + 2 + len + 2;
      return decoder.decode(buf.subarray(cr + 2, cr + 2 + len));
    }
    case 42: { // '*'
      const len = intAt(buf, start + 1, cr);
      if (len < 0) return null;
      const out: RespValue[] = new Array(len);
      let error: RespError | undefined;
      for (let i = 0; i < len; i++) {
        const v = decodeReply(buf, at);
        if (v instanceof RespError) error ??= v;
        else out[i] = v;
      }
      return error ?? out;
    }
    default:
      throw new Error(`Redis sent an unknown reply type ${type}`);
  }
}

/**
 * One connection, one command at a time (a second waits for the first).
 *
 * @example Usage
 * ```ts ignore
 * import { RespConnection } from "./resp.ts";
 * const r = new RespConnection({ port: 6390 });
 * console.log(await r.command(["PING"])); // "PONG"
 * r.close();
 * ```
 */
export class RespConnection {
  #o: RespOptions;
  #conn?: Deno.Conn;
  #buf = new Uint8Array(64 * 1024);
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;

  /** Connects lazily, on the first command. */
  constructor(o: RespOptions = {}) {
    this.#o = o;
  }

  /**
   * Sends one command and waits for its reply; an error reply rejects with
   * {@linkcode RespError}. With `timeoutMs`, a reply that has not come by
   * then closes the connection (a half-open one never answers) and rejects.
   */
  command(
    args: readonly (string | number)[],
    timeoutMs?: number,
  ): Promise<RespValue> {
    const run = this.#queue.then(() => this.#run(args, timeoutMs));
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Closes the connection; the command in flight, if any, rejects. */
  close(): void {
    this.#closed = true;
    this.#drop();
  }

  #drop(): void {
    const c = this.#conn;
    this.#conn = undefined;
    try {
      c?.close();
    } catch { /* already closed */ }
  }

  async #connect(): Promise<Deno.Conn> {
    const o = this.#o;
    const timeout = o.connectTimeoutMs ?? 5000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const hostname = o.host ?? "127.0.0.1";
    const port = o.port ?? 6379;
    const connecting: Promise<Deno.Conn> = o.path
      ? Deno.connect({ transport: "unix", path: o.path })
      : o.tls
      ? Deno.connectTls({ hostname, port, caCerts: o.tls.caCerts })
      : Deno.connect({ hostname, port });
    const conn = await Promise.race([
      connecting,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          connecting.then((c) => c.close(), () => {});
          reject(new Error(`Redis: no connection within ${timeout} ms`));
        }, timeout);
      }),
    ]).finally(() => clearTimeout(timer));
    if (this.#closed) {
      conn.close();
      throw new Error("Redis connection closed");
    }
    const tcp = conn as Partial<Deno.TcpConn>;
    if (typeof tcp.setNoDelay === "function") tcp.setNoDelay(true);
    this.#conn = conn;
    try {
      if (o.password) {
        await this.#roundTrip(
          conn,
          o.username ? ["AUTH", o.username, o.password] : ["AUTH", o.password],
        );
      }
      if (o.db) await this.#roundTrip(conn, ["SELECT", o.db]);
    } catch (err) {
      this.#drop();
      throw err;
    }
    return conn;
  }

  async #run(
    args: readonly (string | number)[],
    timeoutMs: number | undefined,
  ): Promise<RespValue> {
    if (this.#closed) throw new Error("Redis connection closed");
    // The deadline covers connecting and AUTH too: a stopped server accepts
    // connections and answers nothing.
    let timedOut = false;
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => {
      timedOut = true;
      this.#drop();
    }, timeoutMs);
    let conn = this.#conn;
    try {
      conn ??= await this.#connect();
      if (timedOut) throw new Error("timed out");
      return await this.#roundTrip(conn, args);
    } catch (err) {
      if (timedOut) {
        this.#drop();
        throw new Error(`Redis: no reply within ${timeoutMs} ms`);
      }
      // A reply we could not read leaves the stream out of step: start over.
      if (!(err instanceof RespError) && this.#conn === conn) this.#drop();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  async #roundTrip(
    conn: Deno.Conn,
    args: readonly (string | number)[],
  ): Promise<RespValue> {
    const req = encodeCommand(args);
    for (let at = 0; at < req.length;) at += await conn.write(req.subarray(at));
    let buf = this.#buf;
    let end = 0;
    for (;;) {
      if (end === buf.length) {
        const bigger = new Uint8Array(buf.length * 2);
        bigger.set(buf);
        buf = bigger;
      }
      const n = await conn.read(buf.subarray(end));
      if (n === null) throw new Error("Redis closed the connection");
      end += n;
      const last = replyEnd(buf, end);
      if (last < 0) continue;
      if (last !== end) {
        throw new Error("Redis sent more than one reply to one command");
      }
      // A grown buffer is kept up to 1 MiB.
      if (buf.length <= 1 << 20) this.#buf = buf;
      const v = decodeReply(buf.subarray(0, end), { i: 0 });
      if (v instanceof RespError) throw v;
      return v;
    }
  }
}
