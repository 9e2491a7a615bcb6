/**
 * A tiny in-process cluster for tests: each node's Ready is persisted to a
 * {@linkcode MemoryStorage}, its messages queued, its committed entries
 * recorded. Delivery is explicit, so tests control every interleaving.
 *
 * @module
 */
import { createRaft, type RaftNode, type RaftOptions } from "./core.ts";
import { MemoryStorage } from "./storage.ts";
import type { Entry, Message, ReadState } from "./types.ts";

/** One node of a {@linkcode TestCluster}. */
export interface TestPeer {
  node: RaftNode;
  storage: MemoryStorage;
  /** Every entry applied, in order (restarts keep the record). */
  applied: Entry[];
  readStates: ReadState[];
  down: boolean;
}

/** Options shared by every node of a test cluster. */
export type PeerOptions = Omit<RaftOptions, "id" | "peers" | "storage">;

/**
 * An explicit-delivery cluster.
 *
 * @example Usage
 * ```ts
 * import { TestCluster } from "./_network.ts";
 * const c = new TestCluster(["1", "2", "3"]);
 * c.get("1").campaign();
 * c.stabilize();
 * c.get("1").role; // "leader"
 * ```
 */
export class TestCluster {
  peers = new Map<string, TestPeer>();
  /** Messages sent and not yet delivered, in order. */
  inflight: Message[] = [];
  /** Directed links that drop everything: "from->to". */
  cut = new Set<string>();
  /** Every message delivered, for assertions. */
  delivered: Message[] = [];
  readonly options: PeerOptions;

  constructor(ids: string[], options: PeerOptions = {}) {
    this.options = options;
    for (const id of ids) this.add(id, ids);
  }

  /** Adds a node; `peers` [] for one joining an existing cluster. */
  add(id: string, peers: string[]): TestPeer {
    const storage = new MemoryStorage();
    const node = createRaft({
      random: () => 0,
      ...this.options,
      id,
      peers,
    });
    const p: TestPeer = {
      node,
      storage,
      applied: [],
      readStates: [],
      down: false,
    };
    this.peers.set(id, p);
    return p;
  }

  /** The node with `id`. */
  get(id: string): RaftNode {
    const p = this.peers.get(id);
    if (!p) throw new RangeError(`No node '${id}' in the test cluster`);
    return p.node;
  }

  /** Handles one node's Ready: persist, queue messages, apply, advance. */
  process(id: string): boolean {
    const p = this.peers.get(id)!;
    if (p.down || !p.node.hasReady()) return false;
    const rd = p.node.ready();
    p.storage.save(rd);
    this.inflight.push(...rd.messages);
    if (rd.snapshot) {
      p.applied = p.applied.filter((e) => e.index <= rd.snapshot!.index);
    }
    p.applied.push(...rd.committed);
    p.readStates.push(...rd.readStates);
    p.node.advance(rd);
    return true;
  }

  /** Processes every node's Ready once. */
  processAll(): boolean {
    let any = false;
    for (const id of this.peers.keys()) any = this.process(id) || any;
    return any;
  }

  /** Delivers (or drops) the queued messages matching `filter`; returns those delivered. */
  deliver(filter: (m: Message) => boolean = () => true): Message[] {
    const now = this.inflight.filter(filter);
    this.inflight = this.inflight.filter((m) => !filter(m));
    const out: Message[] = [];
    for (const m of now) {
      const p = this.peers.get(m.to);
      if (!p || p.down || this.cut.has(`${m.from}->${m.to}`)) continue;
      p.node.step(m);
      this.delivered.push(m);
      out.push(m);
    }
    return out;
  }

  /** Processes and delivers until nothing moves. */
  stabilize(maxRounds = 1000): void {
    for (let i = 0; i < maxRounds; i++) {
      const moved = this.processAll();
      if (!moved && this.inflight.length === 0) return;
      this.deliver();
    }
    throw new Error(`Cluster did not stabilize in ${maxRounds} rounds`);
  }

  /** Ticks `id` `n` times. */
  tick(id: string, n = 1): void {
    for (let i = 0; i < n; i++) this.get(id).tick();
  }

  /** Cuts both directions between `a` and `b`. */
  partition(a: string, b: string): void {
    this.cut.add(`${a}->${b}`);
    this.cut.add(`${b}->${a}`);
  }

  /** Isolates `id` from everyone. */
  isolate(id: string): void {
    for (const other of this.peers.keys()) {
      if (other !== id) this.partition(id, other);
    }
  }

  /** Heals every cut. */
  heal(): void {
    this.cut.clear();
  }

  /** Crashes `id`: unsynced state and queued messages to it are lost. */
  crash(id: string): void {
    this.peers.get(id)!.down = true;
    this.inflight = this.inflight.filter((m) => m.to !== id);
  }

  /** Restarts `id` from its storage. */
  restart(id: string, peers: string[]): void {
    const p = this.peers.get(id)!;
    p.node = createRaft({
      random: () => 0,
      ...this.options,
      id,
      peers,
      storage: p.storage.state(),
    });
    p.applied = p.applied.filter((e) =>
      e.index <= (p.storage.snapshot?.index ?? 0)
    );
    p.down = false;
  }

  /** The leader with the highest term, if any. */
  leader(): RaftNode | undefined {
    let best: RaftNode | undefined;
    for (const p of this.peers.values()) {
      if (p.down || p.node.role !== "leader") continue;
      if (!best || p.node.term > best.term) best = p.node;
    }
    return best;
  }
}
