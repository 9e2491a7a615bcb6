/**
 * A tiny in-process PBFT cluster for tests: each replica's Ready is
 * persisted to an in-memory record list, its messages queued, its executed
 * batches recorded (and checkpointed with a stand-in state). Delivery is
 * explicit, so tests control every interleaving.
 *
 * @module
 */
import {
  createPbft,
  type PbftNode,
  type PbftOptions,
  requestSigner,
  signRequest,
} from "./core.ts";
import { fakeAuth } from "./_sim.ts";
import type {
  Executed,
  PbftMessage,
  PbftRecord,
  PbftRequest,
} from "./types.ts";

/** One replica of a {@linkcode TestCluster}. */
export interface TestReplica {
  node: PbftNode;
  records: PbftRecord[];
  /** Every batch executed, in order (restarts and state transfers keep the record). */
  executed: Executed[];
  /** The stand-in state: the digests executed, joined. */
  state: string;
  down: boolean;
}

/** Options shared by every replica of a test cluster. */
export type ClusterOptions = Omit<PbftOptions, "id" | "replicas" | "auth">;

/** The stand-in secret of each replica (tests may forge with a wrong one). */
export const testSecret = (id: string): string => `secret-${id}`;

/**
 * A request signed by its client's stand-in key (the signer is the client
 * id up to its first `/`).
 *
 * @example Usage
 * ```ts
 * import { clientRequest } from "./_cluster.ts";
 * clientRequest("c", 1).sig.length > 0; // true
 * ```
 */
export function clientRequest(
  client: string,
  t: number,
  op = `op${t}`,
): PbftRequest {
  return signRequest(fakeAuth(requestSigner(client), testSecret), {
    client,
    t,
    op,
  });
}

/**
 * An explicit-delivery cluster of replicas "1".."n".
 *
 * @example Usage
 * ```ts
 * import { clientRequest, TestCluster } from "./_cluster.ts";
 * const c = new TestCluster(4);
 * c.get("1").request(clientRequest("c", 1));
 * c.stabilize();
 * c.replica("4").executed.length; // 1
 * ```
 */
export class TestCluster {
  readonly ids: string[];
  replicas = new Map<string, TestReplica>();
  /** Messages sent and not yet delivered, in order. */
  inflight: PbftMessage[] = [];
  readonly options: ClusterOptions;

  constructor(n: number, options: ClusterOptions = {}) {
    this.ids = Array.from({ length: n }, (_, i) => `${i + 1}`);
    this.options = options;
    for (const id of this.ids) {
      this.replicas.set(id, {
        node: this.#create(id, undefined),
        records: [],
        executed: [],
        state: "",
        down: false,
      });
    }
  }

  #create(id: string, storage: PbftRecord[] | undefined): PbftNode {
    return createPbft({
      ...this.options,
      id,
      replicas: this.ids,
      auth: fakeAuth(id, testSecret),
      storage,
    });
  }

  /** The replica with `id`. */
  replica(id: string): TestReplica {
    const r = this.replicas.get(id);
    if (!r) throw new RangeError(`No replica '${id}' in the test cluster`);
    return r;
  }

  /** The core of replica `id`. */
  get(id: string): PbftNode {
    return this.replica(id).node;
  }

  /** Handles one replica's Ready: persist, queue messages, apply. */
  process(id: string): boolean {
    const r = this.replica(id);
    if (r.down || !r.node.hasReady()) return false;
    while (r.node.hasReady()) {
      const rd = r.node.ready();
      if (rd.compact) r.records = [...rd.compact];
      r.records.push(...rd.persist);
      this.inflight.push(...rd.early, ...rd.messages);
      if (rd.snapshot) r.state = rd.snapshot.data;
      for (const e of rd.executed) {
        r.executed.push(e);
        r.state += `${e.seq}:${e.digest};`;
        if (e.checkpoint) r.node.checkpoint(e.seq, r.state);
      }
    }
    return true;
  }

  /** Processes every replica's Ready. */
  processAll(): boolean {
    let any = false;
    for (const id of this.ids) any = this.process(id) || any;
    return any;
  }

  /** Delivers (or drops) the queued messages matching `filter`; returns those delivered. */
  deliver(filter: (m: PbftMessage) => boolean = () => true): PbftMessage[] {
    const now = this.inflight.filter(filter);
    this.inflight = this.inflight.filter((m) => !filter(m));
    const out: PbftMessage[] = [];
    for (const m of now) {
      const r = this.replicas.get(m.to);
      if (!r || r.down) continue;
      r.node.step(m);
      out.push(m);
    }
    return out;
  }

  /** Drops the queued messages matching `filter`. */
  drop(filter: (m: PbftMessage) => boolean): void {
    this.inflight = this.inflight.filter((m) => !filter(m));
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

  /** Ticks every live replica `n` times, stabilising after each. */
  tickAll(n = 1, only?: string[]): void {
    for (let i = 0; i < n; i++) {
      for (const id of only ?? this.ids) {
        const r = this.replica(id);
        if (!r.down) r.node.tick();
      }
      this.stabilize();
    }
  }

  /** Crashes `id`: queued messages to it are lost. */
  crash(id: string): void {
    this.replica(id).down = true;
    this.inflight = this.inflight.filter((m) => m.to !== id);
  }

  /** Restarts `id` from its records. */
  restart(id: string): void {
    const r = this.replica(id);
    r.node = this.#create(id, r.records);
    r.state = "";
    r.down = false;
  }
}
