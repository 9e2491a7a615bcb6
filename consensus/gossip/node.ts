/**
 * The SWIM + Lifeguard member as a pure state machine. It owns no clock,
 * timer, socket or randomness: a driver feeds it received packets
 * ({@linkcode SwimNode.receive}) and timer wake-ups ({@linkcode SwimNode.tick}
 * at {@linkcode SwimNode.nextTickAt}), always with the current time, and
 * drains the packets to send and the membership events it produced.
 *
 * Protocol (memberlist's, from the SWIM and Lifeguard papers):
 * - Each protocol period a member pings one target (round-robin over a
 *   shuffled list, or uniformly at random). Without an ack within the probe
 *   timeout it asks k others to ping the target for it (they nack if they get
 *   no answer either); without any ack by the end of the period it suspects
 *   the target.
 * - Suspicions carry the target's incarnation. A suspected member that hears
 *   of it refutes by raising its incarnation; otherwise the suspicion timer
 *   declares it dead. Alive, suspect and dead notices are piggybacked on every
 *   datagram and gossiped to a few members every gossip interval, each sent
 *   mult · ceil(log10(n + 1)) times.
 * - Push/pull exchanges full state with one random member periodically and
 *   is how a member joins through seed addresses.
 * - Lifeguard: missed acks and nacks raise a local health score that
 *   stretches this member's probe interval and timeout; a suspicion starts
 *   long and shrinks as independent members confirm it; a ping to a suspected
 *   member carries the suspicion, so it can refute at once (buddy system).
 *
 * Two small departures from memberlist, both to cut false positives: a
 * helper sends its nack at 80 % of the probe timeout, so it is back before
 * the prober's period ends (memberlist's lands just after it with the
 * defaults); and a suspect or dead notice about an incarnation already
 * refuted is answered with the current alive notice, sent straight back to
 * whoever sent it. The infection-style spread misses each member with
 * probability about e^(−retransmits); without the answer such a member
 * declares a healthy member dead when its suspicion timer runs out.
 *
 * Gossip gives membership and failure detection only. It does not give a
 * safe leader: two members may see different memberships at the same time.
 *
 * @module
 */
import { Awareness } from "./awareness.ts";
import { BroadcastQueue } from "./broadcast.ts";
import {
  concatPacket,
  decodePacket,
  encodePacket,
  type GossipMessage,
  type MemberSnapshot,
  type MemberState,
} from "./codec.ts";
import {
  type GossipConfig,
  gossipConfig,
  pushPullIntervalFor,
  retransmitLimit,
} from "./config.ts";
import { Suspicion } from "./suspicion.ts";
import { TimerHeap } from "./_heap.ts";

/** A packet for the driver to send. */
export interface OutboundPacket {
  /** Destination address, as the members advertise it. */
  to: string;
  /** The encoded packet. */
  data: Uint8Array;
  /**
   * A stream (TCP) message: push/pull state may exceed a datagram; the rest
   * fit the configured `maxPacketBytes`.
   */
  reliable: boolean;
}

/** What changed in this member's view. */
export type MembershipEventType =
  | "join"
  | "suspect"
  | "alive"
  | "failed"
  | "left"
  | "update";

/** One change in this member's view of another member. */
export interface MembershipEvent {
  type: MembershipEventType;
  id: string;
  addr: string;
  incarnation: number;
  /** Time of the change, as given by the driver. */
  at: number;
}

/** A member as this node sees it. */
export interface Member extends MemberSnapshot {
  /** When its state last changed here. */
  since: number;
}

/** Counters a driver can export as metrics. */
export interface SwimStats {
  packetsSent: number;
  /** All bytes sent, datagrams and streams. */
  bytesSent: number;
  /** Of those, bytes of stream (push/pull) messages. */
  bytesSentReliable: number;
  packetsReceived: number;
  bytesReceived: number;
  /** Packets that failed to decode (ignored). */
  malformed: number;
  probes: number;
  /** Probes that ended with no ack (this node raised or confirmed a suspicion). */
  probesFailed: number;
  refutations: number;
  /** Alive notices for a known id from another address, ignored. */
  conflicts: number;
}

/** Options for {@linkcode SwimNode}. */
export interface SwimNodeOptions {
  /** This member's unique name. */
  id: string;
  /** The address others send to. */
  addr: string;
  /** Current time (ms, any monotonic origin). */
  now: number;
  /** Uniform [0, 1) source. @default {Math.random} */
  random?: () => number;
  /** Protocol settings. @default {DEFAULT_GOSSIP_CONFIG} */
  config?: Partial<GossipConfig>;
  /** Starting incarnation (a restart may continue a persisted one). @default {0} */
  incarnation?: number;
  /**
   * Members known from the start, as if learned by an earlier push/pull;
   * nothing is broadcast about them or this node (simulations use it to
   * skip the join phase). Without it this node announces itself.
   */
  members?: { id: string; addr: string; incarnation?: number }[];
}

interface Rec {
  id: string;
  addr: string;
  incarnation: number;
  state: MemberState;
  since: number;
  suspicion?: Suspicion;
}

type AckHandler =
  | {
    kind: "probe";
    target: string;
    acked: boolean;
    nacks: number;
    expectedNacks: number;
  }
  | { kind: "relay"; originAddr: string; originSeq: number };

type Timer =
  | { kind: "probe" }
  | { kind: "gossip" }
  | { kind: "push-pull" }
  | { kind: "probe-timeout"; seq: number }
  | { kind: "probe-deadline"; seq: number }
  | { kind: "relay-nack"; seq: number }
  | { kind: "relay-timeout"; seq: number }
  | { kind: "suspicion"; id: string; suspicion: Suspicion };

interface Pending {
  to: string;
  parts: Uint8Array[];
  reliable: boolean;
}

/**
 * One SWIM + Lifeguard member, deterministic given its inputs.
 *
 * @example Two members, wired by hand
 * ```ts
 * import { SwimNode } from "./node.ts";
 * const a = new SwimNode({ id: "a", addr: "a:1", now: 0 });
 * const b = new SwimNode({ id: "b", addr: "b:1", now: 0 });
 * const nodes = new Map([["a:1", a], ["b:1", b]]);
 * b.join(["a:1"], 0);
 * for (let t = 0; t < 3000; t += 10) {
 *   for (const [addr, n] of nodes) {
 *     if (n.nextTickAt() <= t) n.tick(t);
 *     for (const p of n.drainPackets()) nodes.get(p.to)?.receive(addr, p.data, t);
 *   }
 * }
 * a.members().map((m) => m.id).sort(); // ["a", "b"]
 * ```
 */
export class SwimNode {
  /** This member's name. */
  readonly id: string;
  /** This member's address. */
  readonly addr: string;
  /** The settings in force. */
  readonly config: GossipConfig;
  /** Counters since start. */
  readonly stats: SwimStats = {
    packetsSent: 0,
    bytesSent: 0,
    bytesSentReliable: 0,
    packetsReceived: 0,
    bytesReceived: 0,
    malformed: 0,
    probes: 0,
    probesFailed: 0,
    refutations: 0,
    conflicts: 0,
  };

  #random: () => number;
  #now: number;
  #self: Rec;
  #members = new Map<string, Rec>();
  #order: string[] = [];
  #orderIndex = 0;
  #probesSinceReap = 0;
  #seq = 0;
  #acks = new Map<number, AckHandler>();
  #timers = new TimerHeap<Timer>();
  #queue = new BroadcastQueue();
  #awareness: Awareness;
  #outbox: Pending[] = [];
  #packets: OutboundPacket[] = [];
  #events: MembershipEvent[] = [];
  #left = false;

  constructor(options: SwimNodeOptions) {
    if (!options.id) throw new TypeError("SwimNode needs a non-empty id");
    if (!options.addr) {
      throw new TypeError(`SwimNode "${options.id}" needs a non-empty addr`);
    }
    this.id = options.id;
    this.addr = options.addr;
    this.config = gossipConfig(options.config);
    this.#random = options.random ?? Math.random;
    this.#now = options.now;
    this.#awareness = new Awareness(this.config.awarenessMaxMultiplier);
    this.#self = {
      id: this.id,
      addr: this.addr,
      incarnation: options.incarnation ?? 0,
      state: "alive",
      since: this.#now,
    };
    this.#members.set(this.id, this.#self);
    if (options.members) {
      for (const m of options.members) {
        if (m.id === this.id || this.#members.has(m.id)) continue;
        this.#members.set(m.id, {
          id: m.id,
          addr: m.addr,
          incarnation: m.incarnation ?? 0,
          state: "alive",
          since: this.#now,
        });
        this.#insertInOrder(m.id);
      }
    } else {
      this.#broadcast(this.id, {
        type: "alive",
        incarnation: this.#self.incarnation,
        node: this.id,
        addr: this.addr,
      });
    }
    const c = this.config;
    const first = (period: number) =>
      this.#now + (c.staggerStart ? this.#random() * period : period);
    this.#timers.push(first(c.probeIntervalMs), { kind: "probe" });
    this.#timers.push(first(c.gossipIntervalMs), { kind: "gossip" });
    this.#timers.push(
      first(pushPullIntervalFor(c.pushPullIntervalMs, this.#members.size)),
      { kind: "push-pull" },
    );
  }

  /** This member's current incarnation. */
  get incarnation(): number {
    return this.#self.incarnation;
  }

  /** Lifeguard health score: 0 is healthy, timeouts scale by score + 1. */
  get healthScore(): number {
    return this.#awareness.score;
  }

  /** Broadcasts waiting to be piggybacked. */
  get pendingBroadcasts(): number {
    return this.#queue.size;
  }

  /** True once `leave` was called and its notice was sent its full count. */
  get leaveComplete(): boolean {
    return this.#left && !this.#queue.has(this.id);
  }

  /** When {@linkcode SwimNode.tick} should next run (Infinity: never). */
  nextTickAt(): number {
    return this.#timers.peekAt();
  }

  /** Members known, this one included, dead and left ones until forgotten. */
  members(): Member[] {
    return [...this.#members.values()].map((r) => ({
      id: r.id,
      addr: r.addr,
      incarnation: r.incarnation,
      state: r.state,
      since: r.since,
    }));
  }

  /** One member's entry, or undefined when unknown. */
  member(id: string): Member | undefined {
    const r = this.#members.get(id);
    return r && {
      id: r.id,
      addr: r.addr,
      incarnation: r.incarnation,
      state: r.state,
      since: r.since,
    };
  }

  /**
   * The suspicion this member holds about `id` while it is suspect:
   * independent confirmations so far, how many would shorten its timer to
   * the minimum, and when (virtual time) it is declared dead.
   */
  suspicion(
    id: string,
  ): { confirmations: number; expected: number; deadline: number } | undefined {
    const s = this.#members.get(id)?.suspicion;
    return s && {
      confirmations: s.confirmations,
      expected: s.k,
      deadline: s.deadline,
    };
  }

  /** Packets produced since the last call. */
  drainPackets(): OutboundPacket[] {
    const out = this.#packets;
    this.#packets = [];
    return out;
  }

  /** Membership events produced since the last call. */
  drainEvents(): MembershipEvent[] {
    const out = this.#events;
    this.#events = [];
    return out;
  }

  /** Asks each seed address for a full-state exchange. */
  join(seeds: readonly string[], now: number): void {
    this.#advance(now);
    for (const addr of seeds) {
      if (addr === this.addr) continue;
      this.#send(addr, [this.#pushPull(true, false)], true);
    }
    this.#flush();
  }

  /**
   * Announces a graceful leave; keep driving the node until
   * {@linkcode SwimNode.leaveComplete} (or a deadline) so the notice spreads.
   */
  leave(now: number): void {
    this.#advance(now);
    if (this.#left) return;
    this.#left = true;
    this.#self.state = "left";
    this.#self.since = now;
    this.#broadcast(this.id, {
      type: "dead",
      incarnation: this.#self.incarnation,
      node: this.id,
      from: this.id,
    });
    this.#flush();
  }

  /** Handles one packet received from address `from`. */
  receive(from: string, data: Uint8Array, now: number): void {
    this.#advance(now);
    this.stats.packetsReceived++;
    this.stats.bytesReceived += data.length;
    let messages: GossipMessage[];
    try {
      messages = decodePacket(data);
    } catch {
      this.stats.malformed++;
      return;
    }
    for (const m of messages) this.#handle(from, m);
    this.#flush();
  }

  /** Runs every timer due at `now`. */
  tick(now: number): void {
    this.#advance(now);
    while (this.#timers.peekAt() <= now) {
      const { value } = this.#timers.pop()!;
      this.#fire(value);
    }
    this.#flush();
  }

  #advance(now: number): void {
    if (now > this.#now) this.#now = now;
  }

  #handle(from: string, m: GossipMessage): void {
    switch (m.type) {
      case "ping":
        // A ping for another name reached a reused address: stay silent.
        if (m.target === this.id) {
          this.#sendMsg(from, { type: "ack", seq: m.seq });
        }
        return;
      case "indirect-ping": {
        const seq = ++this.#seq;
        this.#acks.set(seq, {
          kind: "relay",
          originAddr: from,
          originSeq: m.seq,
        });
        this.#sendMsg(m.targetAddr, { type: "ping", seq, target: m.target });
        // The nack goes at 80 % of the timeout so it is back before the
        // prober's period ends; a later ack is still relayed until the end.
        if (m.nack) {
          this.#timers.push(this.#now + 0.8 * this.config.probeTimeoutMs, {
            kind: "relay-nack",
            seq,
          });
        }
        this.#timers.push(this.#now + this.config.probeTimeoutMs, {
          kind: "relay-timeout",
          seq,
        });
        return;
      }
      case "ack": {
        const h = this.#acks.get(m.seq);
        if (!h) return;
        this.#acks.delete(m.seq);
        if (h.kind === "relay") {
          this.#sendMsg(h.originAddr, { type: "ack", seq: h.originSeq });
        } else if (!h.acked) {
          h.acked = true;
          if (this.config.awareness) this.#awareness.apply(-1);
        }
        return;
      }
      case "nack": {
        const h = this.#acks.get(m.seq);
        if (h?.kind === "probe") h.nacks++;
        return;
      }
      case "alive":
        this.#onAlive(m);
        return;
      case "suspect":
        this.#onSuspect(m, from);
        return;
      case "dead":
        this.#onDead(m, from);
        return;
      case "push-pull":
        for (const s of m.members) this.#merge(s);
        if (!m.reply) this.#send(from, [this.#pushPull(false, true)], true);
        return;
    }
  }

  #fire(t: Timer): void {
    const c = this.config;
    switch (t.kind) {
      case "probe":
        this.#probe();
        return;
      case "gossip":
        this.#timers.push(this.#now + c.gossipIntervalMs, t);
        this.#gossip();
        return;
      case "push-pull": {
        const n = this.#members.size;
        this.#timers.push(
          this.#now + pushPullIntervalFor(c.pushPullIntervalMs, n),
          t,
        );
        if (this.#left) return;
        const [peer] = this.#randomMembers(1, (r) => r.state === "alive");
        if (peer) this.#send(peer.addr, [this.#pushPull(false, false)], true);
        return;
      }
      case "probe-timeout": {
        const h = this.#acks.get(t.seq);
        if (h?.kind !== "probe" || h.acked) return;
        const target = this.#members.get(h.target);
        if (!target) return;
        const helpers = this.#randomMembers(
          c.indirectChecks,
          (r) => r.state === "alive" && r.id !== h.target,
        );
        const msg = encodePacket([{
          type: "indirect-ping",
          seq: t.seq,
          target: target.id,
          targetAddr: target.addr,
          nack: c.awareness,
        }]);
        for (const helper of helpers) this.#send(helper.addr, [msg]);
        if (c.awareness) h.expectedNacks = helpers.length;
        return;
      }
      case "probe-deadline": {
        const h = this.#acks.get(t.seq);
        if (h?.kind !== "probe") return;
        this.#acks.delete(t.seq);
        if (h.acked) return;
        if (c.awareness) {
          // With helpers, only their missing nacks point at us; alone, any
          // failed probe might be our own fault.
          this.#awareness.apply(
            h.expectedNacks > 0 ? h.expectedNacks - h.nacks : 1,
          );
        }
        const target = this.#members.get(h.target);
        if (
          !target || (target.state !== "alive" && target.state !== "suspect")
        ) {
          return;
        }
        this.stats.probesFailed++;
        this.#onSuspect({
          type: "suspect",
          incarnation: target.incarnation,
          node: target.id,
          from: this.id,
        });
        return;
      }
      case "relay-nack": {
        const h = this.#acks.get(t.seq);
        if (h?.kind === "relay") {
          this.#sendMsg(h.originAddr, { type: "nack", seq: h.originSeq });
        }
        return;
      }
      case "relay-timeout":
        if (this.#acks.get(t.seq)?.kind === "relay") this.#acks.delete(t.seq);
        return;
      case "suspicion": {
        const r = this.#members.get(t.id);
        if (!r || r.suspicion !== t.suspicion) return;
        if (t.suspicion.deadline > this.#now) return;
        this.#onDead({
          type: "dead",
          incarnation: r.incarnation,
          node: r.id,
          from: this.id,
        });
        return;
      }
    }
  }

  #probe(): void {
    if (this.#left) return;
    const c = this.config;
    const interval = this.#scaled(c.probeIntervalMs);
    const target = this.#nextTarget();
    if (!target) {
      this.#timers.push(this.#now + interval, { kind: "probe" });
      return;
    }
    this.stats.probes++;
    const seq = ++this.#seq;
    this.#acks.set(seq, {
      kind: "probe",
      target: target.id,
      acked: false,
      nacks: 0,
      expectedNacks: 0,
    });
    const parts = [encodePacket([{ type: "ping", seq, target: target.id }])];
    if (c.buddy && target.state === "suspect") {
      parts.push(encodePacket([{
        type: "suspect",
        incarnation: target.incarnation,
        node: target.id,
        from: this.id,
      }]));
    }
    this.#send(target.addr, parts);
    this.#timers.push(this.#now + this.#scaled(c.probeTimeoutMs), {
      kind: "probe-timeout",
      seq,
    });
    // The deadline is queued before the next probe so it runs first.
    this.#timers.push(this.#now + interval, { kind: "probe-deadline", seq });
    this.#timers.push(this.#now + interval, { kind: "probe" });
  }

  #scaled(ms: number): number {
    return this.config.awareness ? this.#awareness.scale(ms) : ms;
  }

  #probeable(id: string): Rec | undefined {
    const r = this.#members.get(id);
    return r && (r.state === "alive" || r.state === "suspect") ? r : undefined;
  }

  #nextTarget(): Rec | undefined {
    const order = this.#order;
    if (this.config.probeMode === "random") {
      if (++this.#probesSinceReap > order.length) {
        this.#probesSinceReap = 0;
        this.#reap();
      }
      for (let i = 0; i < 2 * order.length; i++) {
        const r = this.#probeable(
          order[Math.floor(this.#random() * order.length)],
        );
        if (r) return r;
      }
      const live = order.filter((id) => this.#probeable(id));
      if (live.length === 0) return undefined;
      return this.#probeable(live[Math.floor(this.#random() * live.length)]);
    }
    for (let tries = 0; tries <= order.length; tries++) {
      if (this.#orderIndex >= order.length) {
        this.#reap();
        this.#shuffle();
        this.#orderIndex = 0;
        if (this.#order.length === 0) return undefined;
      }
      const r = this.#probeable(this.#order[this.#orderIndex++]);
      if (r) return r;
    }
    return undefined;
  }

  /** Forgets members dead for longer than gossipToTheDeadMs. */
  #reap(): void {
    const limit = this.#now - this.config.gossipToTheDeadMs;
    let removed = false;
    for (const id of this.#order) {
      const r = this.#members.get(id)!;
      if ((r.state === "dead" || r.state === "left") && r.since <= limit) {
        this.#members.delete(id);
        removed = true;
      }
    }
    if (removed) {
      this.#order = this.#order.filter((id) => this.#members.has(id));
    }
  }

  #shuffle(): void {
    const a = this.#order;
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.#random() * (i + 1));
      [a[i], a[j]] = [a[j], a[i]];
    }
  }

  #insertInOrder(id: string): void {
    // A random slot, so a new member is not probed by everyone at once.
    const a = this.#order;
    a.push(id);
    const j = Math.floor(this.#random() * a.length);
    [a[a.length - 1], a[j]] = [a[j], a[a.length - 1]];
  }

  /** Up to k distinct other members passing `accept`, chosen at random. */
  #randomMembers(k: number, accept: (r: Rec) => boolean): Rec[] {
    const order = this.#order;
    const out: Rec[] = [];
    if (k <= 0 || order.length === 0) return out;
    if (order.length <= 4 * k) {
      const pool = order.map((id) => this.#members.get(id)!).filter(accept);
      for (let i = 0; i < k && pool.length > 0; i++) {
        const j = Math.floor(this.#random() * pool.length);
        out.push(pool[j]);
        pool[j] = pool[pool.length - 1];
        pool.pop();
      }
      return out;
    }
    const seen = new Set<string>();
    for (let tries = 0; tries < 3 * order.length && out.length < k; tries++) {
      const id = order[Math.floor(this.#random() * order.length)];
      if (seen.has(id)) continue;
      seen.add(id);
      const r = this.#members.get(id)!;
      if (accept(r)) out.push(r);
    }
    return out;
  }

  #gossip(): void {
    if (this.#queue.size === 0) return;
    const c = this.config;
    const now = this.#now;
    const targets = this.#randomMembers(
      c.gossipNodes,
      (r) =>
        r.state === "alive" || r.state === "suspect" ||
        now - r.since < c.gossipToTheDeadMs,
    );
    const limit = retransmitLimit(c.retransmitMult, this.#members.size);
    for (const r of targets) {
      const parts = this.#queue.take(c.maxPacketBytes, limit);
      if (parts.length === 0) return;
      this.#emitPacket(r.addr, concatPacket(parts), false);
    }
  }

  #pushPull(join: boolean, reply: boolean): Uint8Array {
    const members: MemberSnapshot[] = [];
    for (const r of this.#members.values()) {
      members.push({
        id: r.id,
        addr: r.addr,
        incarnation: r.incarnation,
        state: r.state,
      });
    }
    return encodePacket([{ type: "push-pull", join, reply, members }]);
  }

  #merge(s: MemberSnapshot): void {
    switch (s.state) {
      case "alive":
        this.#onAlive({
          type: "alive",
          incarnation: s.incarnation,
          node: s.id,
          addr: s.addr,
        });
        return;
      case "suspect":
      case "dead":
        // A remote dead is only a suspicion here: it may be stale.
        if (!this.#members.has(s.id)) return;
        this.#onSuspect({
          type: "suspect",
          incarnation: s.incarnation,
          node: s.id,
          from: this.id,
        });
        return;
      case "left":
        this.#onDead({
          type: "dead",
          incarnation: s.incarnation,
          node: s.id,
          from: s.id,
        });
        return;
    }
  }

  #onAlive(m: Extract<GossipMessage, { type: "alive" }>): void {
    if (m.node === this.id) {
      if (this.#left) return;
      if (
        m.incarnation > this.#self.incarnation ||
        (m.incarnation === this.#self.incarnation && m.addr !== this.addr)
      ) {
        this.#refute(m.incarnation);
      }
      return;
    }
    const r = this.#members.get(m.node);
    if (!r) {
      const rec: Rec = {
        id: m.node,
        addr: m.addr,
        incarnation: m.incarnation,
        state: "alive",
        since: this.#now,
      };
      this.#members.set(rec.id, rec);
      this.#insertInOrder(rec.id);
      this.#broadcast(rec.id, m);
      this.#emit("join", rec);
      return;
    }
    if (r.addr !== m.addr) {
      const reclaim = this.config.deadNodeReclaimMs;
      const reclaimable = (r.state === "dead" || r.state === "left") &&
        reclaim > 0 && this.#now - r.since >= reclaim;
      if (!reclaimable) {
        this.stats.conflicts++;
        return;
      }
      r.addr = m.addr;
      r.incarnation = m.incarnation;
      this.#setState(r, "alive");
      this.#broadcast(r.id, m);
      this.#emit("update", r);
      return;
    }
    if (m.incarnation <= r.incarnation) return;
    const was = r.state;
    r.incarnation = m.incarnation;
    this.#setState(r, "alive");
    this.#broadcast(r.id, m);
    if (was !== "alive") this.#emit(was === "suspect" ? "alive" : "join", r);
  }

  #onSuspect(
    m: Extract<GossipMessage, { type: "suspect" }>,
    sender?: string,
  ): void {
    const r = this.#members.get(m.node);
    if (!r) return;
    if (m.incarnation < r.incarnation) {
      this.#correct(r, sender);
      return;
    }
    if (r.suspicion) {
      if (r.suspicion.confirm(m.from)) {
        this.#broadcast(r.id, m);
        this.#timers.push(r.suspicion.deadline, {
          kind: "suspicion",
          id: r.id,
          suspicion: r.suspicion,
        });
      }
      return;
    }
    if (r.state !== "alive") return;
    if (r === this.#self) {
      this.#refute(m.incarnation);
      return;
    }
    r.incarnation = m.incarnation;
    this.#setState(r, "suspect");
    const c = this.config;
    const n = this.#members.size;
    const min = c.suspicionMult * Math.max(1, Math.log10(Math.max(1, n))) *
      c.probeIntervalMs;
    const max = c.suspicionDecay ? c.suspicionMaxTimeoutMult * min : min;
    // Confirmations expected: everyone but the accuser and us may confirm.
    let k = c.suspicionDecay ? c.suspicionMult - 2 : 0;
    if (n - 2 < k) k = 0;
    r.suspicion = new Suspicion(m.from, k, min, max, this.#now);
    this.#timers.push(r.suspicion.deadline, {
      kind: "suspicion",
      id: r.id,
      suspicion: r.suspicion,
    });
    this.#broadcast(r.id, m);
    this.#emit("suspect", r);
  }

  #onDead(m: Extract<GossipMessage, { type: "dead" }>, sender?: string): void {
    const r = this.#members.get(m.node);
    if (!r) return;
    if (m.incarnation < r.incarnation) {
      this.#correct(r, sender);
      return;
    }
    if (r.state === "dead" || r.state === "left") return;
    if (r === this.#self) {
      this.#refute(m.incarnation);
      return;
    }
    r.incarnation = m.incarnation;
    const left = m.from === m.node;
    this.#setState(r, left ? "left" : "dead");
    this.#broadcast(r.id, m);
    this.#emit(left ? "left" : "failed", r);
  }

  #refute(accused: number): void {
    const self = this.#self;
    self.incarnation = Math.max(self.incarnation, accused) + 1;
    this.stats.refutations++;
    if (this.config.awareness) this.#awareness.apply(1);
    this.#broadcast(this.id, {
      type: "alive",
      incarnation: self.incarnation,
      node: this.id,
      addr: this.addr,
    });
  }

  /**
   * A suspect or dead notice about an incarnation already refuted: whoever
   * sent it missed the refutation (the infection-style spread misses a
   * member now and then), and if nothing tells it, its suspicion timer will
   * declare a healthy member dead. So the sender gets the current alive
   * notice straight back, and a member accused about itself re-announces.
   */
  #correct(r: Rec, sender: string | undefined): void {
    if (!this.config.answerStaleNotices) return;
    if (r === this.#self) this.#reannounce();
    if (sender === undefined || r.state !== "alive") return;
    this.#sendMsg(sender, {
      type: "alive",
      incarnation: r.incarnation,
      node: r.id,
      addr: r.addr,
    });
  }

  /**
   * Someone still accuses an incarnation we already refuted: send our
   * current one again (piggybacked on the reply to a buddy-system ping, this
   * reaches the accuser at once).
   */
  #reannounce(): void {
    if (this.#left || this.#queue.has(this.id)) return;
    this.#broadcast(this.id, {
      type: "alive",
      incarnation: this.#self.incarnation,
      node: this.id,
      addr: this.addr,
    });
  }

  #setState(r: Rec, state: MemberState): void {
    r.state = state;
    r.since = this.#now;
    r.suspicion = undefined;
  }

  #emit(type: MembershipEventType, r: Rec): void {
    this.#events.push({
      type,
      id: r.id,
      addr: r.addr,
      incarnation: r.incarnation,
      at: this.#now,
    });
  }

  #broadcast(key: string, m: GossipMessage): void {
    this.#queue.enqueue(key, encodePacket([m]));
  }

  #sendMsg(to: string, m: GossipMessage): void {
    this.#send(to, [encodePacket([m])]);
  }

  #send(to: string, parts: Uint8Array[], reliable = false): void {
    this.#outbox.push({ to, parts, reliable });
  }

  /** Sends the outbox, piggybacking broadcasts on every datagram. */
  #flush(): void {
    if (this.#outbox.length === 0) return;
    const c = this.config;
    const limit = retransmitLimit(c.retransmitMult, this.#members.size);
    for (const p of this.#outbox) {
      if (!p.reliable && this.#queue.size > 0) {
        let used = 0;
        for (const part of p.parts) used += part.length;
        p.parts.push(...this.#queue.take(c.maxPacketBytes - used, limit));
      }
      this.#emitPacket(p.to, concatPacket(p.parts), p.reliable);
    }
    this.#outbox = [];
  }

  #emitPacket(to: string, data: Uint8Array, reliable: boolean): void {
    this.stats.packetsSent++;
    this.stats.bytesSent += data.length;
    if (reliable) this.stats.bytesSentReliable += data.length;
    this.#packets.push({ to, data, reliable });
  }
}
