/**
 * Socket plumbing of the gossip driver: a UDP socket (Deno's own when
 * `--unstable-net` is on, else `node:dgram`, which needs no flag) and
 * length-prefixed frames over short-lived TCP connections.
 *
 * @module
 */
import dgram from "node:dgram";
import { deadline } from "../../core/resilience/deadline.ts";

/** A bound UDP socket. */
export interface UdpSocket {
  /** The port bound (the one asked for, or the one picked for 0). */
  readonly port: number;
  /** Which API carries the datagrams. */
  readonly api: "Deno.listenDatagram" | "node:dgram";
  send(data: Uint8Array, hostname: string, port: number): void;
  close(): void;
}

/** Splits "host:port" or "[v6]:port"; throws a TypeError naming the value. */
export function splitAddr(addr: string): { hostname: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(addr) ?? /^([^:]+):(\d+)$/.exec(addr);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new TypeError(
      `Gossip address must be host:port or [ipv6]:port, got '${addr}'`,
    );
  }
  return { hostname: m[1], port };
}

/** Joins a host and port into the address form {@linkcode splitAddr} reads. */
export function joinAddr(hostname: string, port: number): string {
  return hostname.includes(":")
    ? `[${hostname}]:${port}`
    : `${hostname}:${port}`;
}

type DenoUdp = {
  listenDatagram?: (
    o: { transport: "udp"; hostname: string; port: number },
  ) => {
    addr: { port: number };
    send(
      d: Uint8Array,
      a: { transport: "udp"; hostname: string; port: number },
    ): Promise<number>;
    receive(): Promise<[Uint8Array, unknown]>;
    close(): void;
  };
};

/** Binds UDP `hostname:port`; `onDatagram` gets each datagram received. */
export async function openUdp(
  hostname: string,
  port: number,
  onDatagram: (data: Uint8Array) => void,
  onSendError: (err: unknown) => void,
): Promise<UdpSocket> {
  const listen = (Deno as unknown as DenoUdp).listenDatagram;
  if (typeof listen === "function") {
    const sock = listen({ transport: "udp", hostname, port });
    let open = true;
    (async () => {
      while (open) {
        try {
          const [data] = await sock.receive();
          onDatagram(data);
        } catch {
          if (!open) return;
          // e.g. an ICMP port-unreachable surfaced on receive: keep going.
          await new Promise((r) => setTimeout(r, 10));
        }
      }
    })();
    return {
      port: sock.addr.port,
      api: "Deno.listenDatagram",
      send: (data, h, p) => {
        sock.send(data, { transport: "udp", hostname: h, port: p }).catch(
          onSendError,
        );
      },
      close: () => {
        open = false;
        sock.close();
      },
    };
  }
  const sock = dgram.createSocket(hostname.includes(":") ? "udp6" : "udp4");
  await new Promise<void>((resolve, reject) => {
    sock.once("error", reject);
    sock.bind(port, hostname, () => {
      sock.off("error", reject);
      resolve();
    });
  });
  sock.on("error", onSendError);
  sock.on("message", (msg: Uint8Array) => onDatagram(new Uint8Array(msg)));
  return {
    port: sock.address().port,
    api: "node:dgram",
    send: (data, h, p) =>
      sock.send(data, p, h, (err) => {
        if (err) onSendError(err);
      }),
    close: () => sock.close(),
  };
}

const MAX_STREAM_FRAME = 4 << 20;
const STREAM_IDLE_MS = 10_000;

/** Accepts TCP connections carrying length-prefixed frames. */
export function serveFrames(
  listener: Deno.Listener,
  onFrame: (frame: Uint8Array) => void,
): void {
  (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return; // closed
      }
      // A peer sends its frames and hangs up; one that lingers is cut off.
      const close = () => {
        try {
          conn.close();
        } catch { /* already closed */ }
      };
      const idle = setTimeout(close, STREAM_IDLE_MS);
      readFrames(conn, onFrame).catch(() => {}).finally(() => {
        clearTimeout(idle);
        close();
      });
    }
  })();
}

async function readFrames(
  conn: Deno.Conn,
  onFrame: (frame: Uint8Array) => void,
): Promise<void> {
  let buf = new Uint8Array(0);
  const chunk = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await conn.read(chunk);
    if (n === null) return;
    const next = new Uint8Array(buf.length + n);
    next.set(buf);
    next.set(chunk.subarray(0, n), buf.length);
    buf = next;
    while (buf.length >= 4) {
      const len = new DataView(buf.buffer, buf.byteOffset).getUint32(0);
      if (len > MAX_STREAM_FRAME) return; // not ours: hang up
      if (buf.length < 4 + len) break;
      onFrame(buf.slice(4, 4 + len));
      buf = buf.slice(4 + len);
    }
  }
}

/** Sends one frame over a new TCP connection, within `timeoutMs`. */
export async function sendFrame(
  hostname: string,
  port: number,
  frame: Uint8Array,
  timeoutMs: number,
): Promise<void> {
  const out = new Uint8Array(4 + frame.length);
  new DataView(out.buffer).setUint32(0, frame.length);
  out.set(frame, 4);
  const connecting = Deno.connect({ hostname, port });
  const conn = await withTimeout(
    connecting,
    timeoutMs,
    `connect ${joinAddr(hostname, port)}`,
  ).catch((err) => {
    // A connection that completes after the timeout is closed, not leaked.
    connecting.then((c) => c.close(), () => {});
    throw err;
  });
  try {
    let off = 0;
    while (off < out.length) {
      off += await withTimeout(
        conn.write(out.subarray(off)),
        timeoutMs,
        `write to ${joinAddr(hostname, port)}`,
      );
    }
  } finally {
    conn.close();
  }
}

/** `p`, or an error naming `what` once `ms` have passed. */
function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return deadline(p, ms, {
    error: () => new Error(`${what}: no answer within ${ms} ms`),
  });
}
