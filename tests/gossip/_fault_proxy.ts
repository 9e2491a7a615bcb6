/**
 * A fault-injecting forwarder in front of one gossip member: its peers send
 * to the proxy's port, which forwards UDP datagrams (dropping a share of them
 * and delaying the rest) and TCP connections (piped, or refused while
 * partitioned) to the member's real port. Tests change the faults while it
 * runs.
 *
 * @module
 */
import dgram from "node:dgram";

/** Faults applied to what the proxy forwards. */
export interface Faults {
  /** Share of datagrams dropped, 0..1. @default {0} */
  drop?: number;
  /** Delay added to each datagram, ms. @default {0} */
  delayMs?: number;
  /** Drop every datagram and refuse TCP (a partition). @default {false} */
  partition?: boolean;
  /** Drop every datagram, keep forwarding TCP (a firewall blocking UDP). @default {false} */
  blockUdp?: boolean;
}

/**
 * One proxy: `addr` is what the member advertises.
 *
 * @example Usage
 * ```ts ignore
 * const proxy = await FaultProxy.start(9001, { drop: 0.05, delayMs: 5 });
 * proxy.addr; // "127.0.0.1:PORT": advertise this
 * proxy.set({ partition: true });
 * await proxy.close();
 * ```
 */
export class FaultProxy {
  readonly port: number;
  readonly addr: string;
  /** Datagrams forwarded and dropped so far. */
  readonly counts = { forwarded: 0, dropped: 0 };
  #faults: Required<Faults>;
  #udp: dgram.Socket;
  #tcp: Deno.Listener;
  #target: number;
  #closed = false;
  #conns = new Set<Deno.Conn>();

  private constructor(
    udp: dgram.Socket,
    tcp: Deno.Listener,
    target: number,
    faults: Faults,
  ) {
    this.#udp = udp;
    this.#tcp = tcp;
    this.#target = target;
    this.port = (tcp.addr as Deno.NetAddr).port;
    this.addr = `127.0.0.1:${this.port}`;
    this.#faults = {
      drop: 0,
      delayMs: 0,
      partition: false,
      blockUdp: false,
      ...faults,
    };
    udp.on("message", (msg: Uint8Array) => this.#datagram(msg));
    this.#accept();
  }

  /** A proxy on a free loopback port forwarding to `targetPort`. */
  static async start(
    targetPort: number,
    faults: Faults = {},
  ): Promise<FaultProxy> {
    const tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (tcp.addr as Deno.NetAddr).port;
    const udp = dgram.createSocket("udp4");
    await new Promise<void>((resolve, reject) => {
      udp.once("error", reject);
      udp.bind(port, "127.0.0.1", () => resolve());
    });
    udp.on("error", () => {});
    return new FaultProxy(udp, tcp, targetPort, faults);
  }

  /** Changes the faults (fields left out keep their value). */
  set(faults: Faults): void {
    this.#faults = { ...this.#faults, ...faults };
  }

  #datagram(msg: Uint8Array): void {
    const f = this.#faults;
    if (
      this.#closed || f.partition || f.blockUdp || Math.random() < f.drop
    ) {
      this.counts.dropped++;
      return;
    }
    const copy = new Uint8Array(msg);
    const send = () => {
      if (this.#closed) return;
      this.counts.forwarded++;
      this.#udp.send(copy, this.#target, "127.0.0.1");
    };
    if (f.delayMs > 0) setTimeout(send, f.delayMs);
    else send();
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await this.#tcp.accept();
      } catch {
        return;
      }
      if (this.#faults.partition) {
        conn.close();
        continue;
      }
      this.#pipe(conn).catch(() => {});
    }
  }

  async #pipe(conn: Deno.Conn): Promise<void> {
    this.#conns.add(conn);
    let upstream: Deno.Conn | undefined;
    try {
      upstream = await Deno.connect({
        hostname: "127.0.0.1",
        port: this.#target,
      });
      this.#conns.add(upstream);
      await Promise.all([
        conn.readable.pipeTo(upstream.writable),
        upstream.readable.pipeTo(conn.writable),
      ]);
    } finally {
      for (const c of [conn, upstream]) {
        if (!c) continue;
        this.#conns.delete(c);
        try {
          c.close();
        } catch { /* closed by pipeTo */ }
      }
    }
  }

  /** Stops forwarding and closes the sockets. */
  close(): Promise<void> {
    this.#closed = true;
    this.#udp.close();
    try {
      this.#tcp.close();
    } catch { /* closed */ }
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    return Promise.resolve();
  }
}
