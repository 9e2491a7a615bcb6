/**
 * Runs a {@linkcode SwimNode} on real sockets: datagrams over UDP, push/pull
 * state over TCP on the same port number, every packet sealed with the
 * cluster secret (see `frame.ts`; packets that fail the check are dropped and
 * counted), timers on the event loop.
 *
 * UDP in Deno 2.9: `Deno.listenDatagram` exists only with `--unstable-net`
 * (or `"unstable": ["net"]` in deno.json); without it the driver uses
 * `node:dgram`, which needs no flag. Either way `--allow-net` is enough.
 *
 * When UDP cannot carry the traffic the driver falls back to TCP for every
 * packet and says why in a log line: at once when the UDP port cannot be
 * bound, or when peers are known but no datagram has arrived within
 * `udpCheckMs` of joining (a firewall dropping UDP). A TCP-only member marks
 * its frames, and the others then send to it over TCP as well.
 *
 * @module
 */
import type { GossipConfig } from "./config.ts";
import { FLAG_TCP_ONLY, FrameCodec } from "./frame.ts";
import {
  type Member,
  type MembershipEvent,
  SwimNode,
  type SwimStats,
} from "./node.ts";
import {
  joinAddr,
  openUdp,
  sendFrame,
  serveFrames,
  splitAddr,
} from "./_net.ts";
import type { UdpSocket } from "./_net.ts";

/** How packets travel. */
export type GossipTransport = "udp" | "tcp";

/** Options of {@linkcode GossipDriver.start}. */
export interface GossipDriverOptions {
  /** This member's unique name (the node id). */
  id: string;
  /** Interface to bind. @default {"127.0.0.1"} */
  hostname?: string;
  /** UDP and TCP port to bind; 0 picks a free one (the same for both). @default {0} */
  port?: number;
  /** The address others send to, if not the bound one (NAT, proxy). */
  advertise?: string;
  /** Cluster secret every member shares (at least 16 characters). */
  secret: string;
  /** Protocol timings. @default {DEFAULT_GOSSIP_CONFIG} */
  config?: Partial<GossipConfig>;
  /**
   * `udp` (TCP for push/pull, and the automatic fallback) or `tcp` for every
   * packet. @default {"udp"}
   */
  transport?: GossipTransport;
  /**
   * With peers known, fall back to TCP when no datagram arrived for this
   * long; 0 turns the check off. @default {10 × probeIntervalMs}
   */
  udpCheckMs?: number;
  /** Starting incarnation. @default {0} */
  incarnation?: number;
  /** Called for each frame dropped for a bad HMAC (metrics). */
  onUnauthenticated?: () => void;
  /** Where diagnostics go. @default {console.warn for warnings} */
  log?: (level: "info" | "warn", msg: string, fields?: object) => void;
}

/** Driver counters on top of the protocol's. */
export interface GossipDriverStats extends SwimStats {
  udpSent: number;
  udpReceived: number;
  tcpSent: number;
  tcpReceived: number;
  /** Frames dropped because their HMAC did not match the cluster secret. */
  unauthenticated: number;
  /** Sends that failed (connection refused, timeouts). */
  sendErrors: number;
}

/** A member with the wall-clock time this node last heard from it. */
export interface DriverMember extends Member {
  /** Wall-clock ms of the last authenticated packet from it (or of the last news). */
  lastSeen: number;
}

/** What {@linkcode GossipDriver.status} reports. */
export interface GossipStatus {
  id: string;
  transport: GossipTransport;
  /** Lifeguard local health: 0 is healthy; probe timeouts scale by score + 1. */
  healthScore: number;
  incarnation: number;
  alive: number;
  suspect: number;
  dead: number;
  left: number;
  /** One line per suspicion this member holds (empty when none). */
  suspicions: string;
  members: {
    id: string;
    addr: string;
    state: string;
    incarnation: number;
    /** How long it has been in its state here, ms. */
    stateForMs: number;
    /** Ms since an authenticated packet from it, or null when never. */
    lastSeenMsAgo: number | null;
    suspicion?: { confirmations: number; expected: number; deadInMs: number };
  }[];
}

/**
 * One gossip member on the network.
 *
 * @example Two members on loopback
 * ```ts
 * import { GossipDriver } from "./driver.ts";
 * const secret = "example-secret-0123456789";
 * const config = { probeIntervalMs: 200, probeTimeoutMs: 100 };
 * const a = await GossipDriver.start({ id: "a", secret, config });
 * const b = await GossipDriver.start({ id: "b", secret, config });
 * b.join([a.addr]);
 * while (a.members().length < 2) await new Promise((r) => setTimeout(r, 20));
 * a.members().map((m) => m.id).sort(); // ["a", "b"]
 * await b.leave(1000);
 * await a.close();
 * ```
 */
export class GossipDriver {
  /** The address others send to. */
  readonly addr: string;
  /** The protocol state machine. */
  readonly node: SwimNode;
  /** Which UDP API carries datagrams (null in TCP mode). */
  readonly udpApi: UdpSocket["api"] | null;
  #codec: FrameCodec;
  #udp: UdpSocket | null;
  #tcp: Deno.Listener;
  #transport: GossipTransport;
  #tcpOnlyPeers = new Set<string>();
  #lastSeen = new Map<string, number>();
  #listeners = new Set<(e: MembershipEvent) => void>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #udpCheck: ReturnType<typeof setTimeout> | undefined;
  #joinRetry: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  #log: NonNullable<GossipDriverOptions["log"]>;
  #onUnauthenticated: (() => void) | undefined;
  #extra = {
    udpSent: 0,
    udpReceived: 0,
    tcpSent: 0,
    tcpReceived: 0,
    unauthenticated: 0,
    sendErrors: 0,
  };

  private constructor(
    options: GossipDriverOptions,
    addr: string,
    udp: UdpSocket | null,
    tcp: Deno.Listener,
    codec: FrameCodec,
    log: NonNullable<GossipDriverOptions["log"]>,
  ) {
    this.addr = addr;
    this.#udp = udp;
    this.udpApi = udp?.api ?? null;
    this.#tcp = tcp;
    this.#codec = codec;
    this.#log = log;
    this.#onUnauthenticated = options.onUnauthenticated;
    this.#transport = udp ? "udp" : "tcp";
    this.node = new SwimNode({
      id: options.id,
      addr,
      now: performance.now(),
      config: options.config,
      incarnation: options.incarnation,
    });
  }

  /**
   * Binds the sockets and starts the protocol timers. Throws when the TCP
   * port cannot be bound; a UDP bind failure only switches to TCP.
   */
  static async start(options: GossipDriverOptions): Promise<GossipDriver> {
    const codec = new FrameCodec(options.secret);
    const hostname = options.hostname ?? "127.0.0.1";
    const log = options.log ??
      ((level, msg, fields) => {
        if (level === "warn") console.warn(msg, fields ?? "");
      });
    let tcp: Deno.Listener;
    try {
      tcp = Deno.listen({ hostname, port: options.port ?? 0 });
    } catch (err) {
      throw new Error(
        `Gossip cannot listen on TCP ${
          joinAddr(hostname, options.port ?? 0)
        }: ${(err as Error).message}`,
        { cause: err },
      );
    }
    const port = (tcp.addr as Deno.NetAddr).port;
    // The UDP socket exists before the driver it feeds.
    const ref: { driver?: GossipDriver } = {};
    let udp: UdpSocket | null = null;
    if ((options.transport ?? "udp") === "udp") {
      try {
        udp = await openUdp(
          hostname,
          port,
          (data) => {
            if (ref.driver) ref.driver.#onFrame(data, "udp");
          },
          () => {
            if (ref.driver) ref.driver.#extra.sendErrors++;
          },
        );
      } catch (err) {
        log(
          "warn",
          `gossip: cannot bind UDP ${joinAddr(hostname, port)} (${
            (err as Error).message
          }); falling back to TCP for every packet`,
          { port },
        );
      }
    }
    const addr = options.advertise ?? joinAddr(hostname, port);
    const driver = new GossipDriver(options, addr, udp, tcp, codec, log);
    ref.driver = driver;
    serveFrames(tcp, (frame) => driver.#onFrame(frame, "tcp"));
    const check = options.udpCheckMs ?? 10 * driver.node.config.probeIntervalMs;
    if (udp && check > 0) {
      driver.#udpCheck = setTimeout(() => driver.#checkUdp(check), check);
    }
    driver.#pump();
    return driver;
  }

  /** `udp`, or `tcp` once every packet goes over TCP. */
  get transport(): GossipTransport {
    return this.#transport;
  }

  /** Protocol and socket counters. */
  get stats(): GossipDriverStats {
    return { ...this.node.stats, ...this.#extra };
  }

  /**
   * Contacts seed addresses (host:port) for a full-state exchange, and again
   * (backing off from 500 ms to 30 s) while no other member is alive: seeds
   * started at the same moment may not be listening yet.
   */
  join(seeds: readonly string[]): void {
    clearTimeout(this.#joinRetry);
    if (seeds.length === 0) return;
    let wait = 500;
    const attempt = () => {
      if (this.#closed) return;
      const others = this.node.members().some((m) =>
        m.id !== this.node.id && m.state === "alive"
      );
      if (others) return;
      this.node.join(seeds, performance.now());
      this.#pump();
      this.#joinRetry = setTimeout(attempt, wait);
      wait = Math.min(wait * 2, 30_000);
    };
    attempt();
  }

  /** Members known, this one included, with when each was last heard from. */
  members(): DriverMember[] {
    const now = Date.now();
    return this.node.members().map((m) => ({
      ...m,
      lastSeen: m.id === this.node.id ? now : this.#lastSeen.get(m.addr) ?? 0,
    }));
  }

  /**
   * This member's view for operators (`GET /api/v1/gossip/status`): its
   * Lifeguard health score, counts by state, each member with how long ago
   * its state changed and it was last heard from, and each suspicion's
   * confirmations and time left before the member is declared dead.
   */
  status(): GossipStatus {
    const now = performance.now();
    const wall = Date.now();
    const members = this.members().map((m) => {
      const s = m.state === "suspect" ? this.node.suspicion(m.id) : undefined;
      return {
        id: m.id,
        addr: m.addr,
        state: m.state,
        incarnation: m.incarnation,
        stateForMs: Math.max(0, Math.round(now - m.since)),
        lastSeenMsAgo: m.lastSeen ? Math.max(0, wall - m.lastSeen) : null,
        ...(s
          ? {
            suspicion: {
              confirmations: s.confirmations,
              expected: s.expected,
              deadInMs: Math.max(0, Math.round(s.deadline - now)),
            },
          }
          : {}),
      };
    });
    const count = (state: string) =>
      members.filter((m) => m.state === state).length;
    return {
      id: this.node.id,
      transport: this.#transport,
      healthScore: this.node.healthScore,
      incarnation: this.node.incarnation,
      alive: count("alive"),
      suspect: count("suspect"),
      dead: count("dead"),
      left: count("left"),
      suspicions: members.filter((m) => m.suspicion).map((m) =>
        `${m.id} ${m.suspicion!.confirmations}/${
          m.suspicion!.expected
        } confirmations, dead in ${(m.suspicion!.deadInMs / 1000).toFixed(1)} s`
      ).join("; "),
      members,
    };
  }

  /** Calls `fn` with every membership event; returns the unsubscribe. */
  onEvent(fn: (e: MembershipEvent) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /**
   * Announces a graceful leave, keeps gossiping until the notice went out
   * its full count or `timeoutMs` passed, then closes.
   */
  async leave(timeoutMs: number): Promise<void> {
    if (this.#closed) return;
    this.node.leave(performance.now());
    this.#pump();
    const until = Date.now() + timeoutMs;
    while (!this.node.leaveComplete && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await this.close();
  }

  /** Stops timers and closes the sockets (no leave notice). */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#udpCheck);
    clearTimeout(this.#joinRetry);
    this.#udp?.close();
    try {
      this.#tcp.close();
    } catch { /* already closed */ }
    return Promise.resolve();
  }

  #onFrame(data: Uint8Array, via: "udp" | "tcp"): void {
    if (this.#closed) return;
    const opened = this.#codec.open(data);
    if (!opened) {
      this.#extra.unauthenticated++;
      this.#onUnauthenticated?.();
      return;
    }
    if (via === "udp") this.#extra.udpReceived++;
    else this.#extra.tcpReceived++;
    if (opened.flags & FLAG_TCP_ONLY) this.#tcpOnlyPeers.add(opened.from);
    this.#lastSeen.set(opened.from, Date.now());
    this.node.receive(opened.from, opened.packet, performance.now());
    this.#pump();
  }

  #checkUdp(windowMs: number): void {
    if (this.#closed || this.#transport === "tcp") return;
    const peers =
      this.node.members().filter((m) =>
        m.id !== this.node.id && m.state === "alive"
      ).length;
    if (peers > 0 && this.#extra.udpSent > 0 && this.#extra.udpReceived === 0) {
      this.#transport = "tcp";
      this.#log(
        "warn",
        `gossip: no UDP datagram arrived on ${this.addr} in ${windowMs} ms while ${peers} peer(s) are known (sent ${this.#extra.udpSent}); UDP looks blocked, so every packet now goes over TCP`,
        { sent: this.#extra.udpSent, peers },
      );
      return;
    }
    if (this.#extra.udpReceived === 0) {
      this.#udpCheck = setTimeout(() => this.#checkUdp(windowMs), windowMs);
    }
  }

  /** Sends what the node produced, emits its events, re-arms the timer. */
  #pump(): void {
    if (this.#closed) return;
    const flags = this.#transport === "tcp" ? FLAG_TCP_ONLY : 0;
    for (const p of this.node.drainPackets()) {
      const frame = this.#codec.seal(this.addr, p.data, flags);
      let dest: { hostname: string; port: number };
      try {
        dest = splitAddr(p.to);
      } catch {
        this.#extra.sendErrors++;
        continue;
      }
      if (
        this.#udp && !p.reliable && this.#transport === "udp" &&
        !this.#tcpOnlyPeers.has(p.to)
      ) {
        this.#extra.udpSent++;
        this.#udp.send(frame, dest.hostname, dest.port);
      } else {
        this.#extra.tcpSent++;
        sendFrame(dest.hostname, dest.port, frame, 2000).catch(() =>
          this.#extra.sendErrors++
        );
      }
    }
    const now = Date.now();
    for (const e of this.node.drainEvents()) {
      if (e.type === "join" || e.type === "alive") {
        if (!this.#lastSeen.has(e.addr)) this.#lastSeen.set(e.addr, now);
      }
      for (const fn of this.#listeners) {
        try {
          fn(e);
        } catch (err) {
          this.#log("warn", "gossip: an event listener threw", {
            error: (err as Error).message,
          });
        }
      }
    }
    clearTimeout(this.#timer);
    const at = this.node.nextTickAt();
    if (Number.isFinite(at)) {
      const delay = Math.max(0, at - performance.now());
      this.#timer = setTimeout(() => {
        if (this.#closed) return;
        this.node.tick(performance.now());
        this.#pump();
      }, delay);
    }
  }
}
