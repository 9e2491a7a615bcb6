/**
 * A small deterministic simulation of a replicated key-value register, to
 * show the linearizability checker catching a real class of bug before the
 * Raft simulation exists: reads served from a replica's local state without
 * ReadIndex (the `staleReads` flag).
 *
 * One fixed leader and its followers exchange messages with seeded random
 * delays on a virtual clock. The leader appends writes and cas operations to
 * a log, replicates them, commits an entry once a majority holds it, applies
 * committed entries in order and only then answers the client; followers
 * learn the commit index later and apply behind the leader. Reads go to the
 * leader, which answers from its applied state (all committed writes: what a
 * ReadIndex read gives when leadership is stable) — unless `staleReads` is
 * set, when any node answers from its own, possibly lagging, state.
 * Responses (and requests) may be lost; the client then times out, abandons
 * the operation (it stays pending in the history) and carries on as a new
 * process, as Jepsen clients do.
 *
 * @module
 */
import {
  HistoryRecorder,
  type KvInput,
  type KvOutput,
  type KvValue,
  type Operation,
} from "../../../testing/linearizability.ts";

/** Options of {@linkcode simulateRegister}. */
export interface RegisterSimOptions {
  /** PRNG seed: the same seed gives the same history. */
  seed: number;
  /** The bug: every node answers reads from its local state. @default false */
  staleReads?: boolean;
  /** Concurrent clients. @default 4 */
  clients?: number;
  /** Operations each client starts. @default 30 */
  opsPerClient?: number;
  /** Keys the clients use. @default ["x", "y"] */
  keys?: string[];
  /** Nodes (node 0 leads). @default 3 */
  nodes?: number;
  /** Probability that a client's request or its answer is lost. @default 0.03 */
  lossRate?: number;
}

/** What {@linkcode simulateRegister} returns. */
export interface RegisterSimResult {
  /** The clients' history. */
  history: Operation<KvInput, KvOutput>[];
  /** Reads answered by a node other than the leader. */
  followerReads: number;
  /** Virtual time at the end, in ms. */
  endTime: number;
}

/**
 * A seeded PRNG (mulberry32): floats in [0, 1).
 *
 * @example
 * ```ts
 * import { mulberry32 } from "./replicated_register.ts";
 * const a = mulberry32(7), b = mulberry32(7);
 * if (a() !== b()) throw new Error("same seed, same sequence");
 * ```
 */
export function mulberry32(seed: number): () => number {
  let a = seed | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Entry {
  input: KvInput;
  /** Recorder id of the client operation it carries out. */
  opId: number;
}

interface Node {
  state: Map<string, KvValue>;
  log: (Entry | undefined)[];
  applied: number;
  commit: number;
}

const CLIENT_TIMEOUT_MS = 300;

/**
 * Runs the simulation and returns the recorded history.
 *
 * @example
 * ```ts
 * import { simulateRegister } from "./replicated_register.ts";
 * import { check, kvModel } from "../../../testing/linearizability.ts";
 * const { history } = simulateRegister({ seed: 1 });
 * if (check(kvModel(), history) !== "ok") throw new Error("the correct register should be linearizable");
 * ```
 */
export function simulateRegister(
  options: RegisterSimOptions,
): RegisterSimResult {
  const {
    seed,
    staleReads = false,
    clients = 4,
    opsPerClient = 30,
    keys = ["x", "y"],
    nodes: nodeCount = 3,
    lossRate = 0.03,
  } = options;
  const random = mulberry32(seed);
  const between = (lo: number, hi: number) =>
    lo + Math.floor(random() * (hi - lo + 1));
  const rec = new HistoryRecorder<KvInput, KvOutput>();

  // Events run in (time, insertion) order.
  let now = 0;
  let seq = 0;
  const queue: { at: number; seq: number; run: () => void }[] = [];
  const schedule = (delay: number, run: () => void) => {
    const ev = { at: now + delay, seq: seq++, run };
    let i = queue.length;
    while (i > 0 && (queue[i - 1].at > ev.at)) i--;
    queue.splice(i, 0, ev);
  };

  const nodes: Node[] = Array.from({ length: nodeCount }, () => ({
    state: new Map(),
    log: [],
    applied: 0,
    commit: 0,
  }));
  const leader = nodes[0];
  /** For each log index, how many nodes hold it (the leader counts). */
  const acks: number[] = [];
  const majority = Math.floor(nodeCount / 2) + 1;

  /** Operations still awaited, by recorder id: the client slot waiting. */
  const waiting = new Map<number, number>();
  let nextProcess = 0;
  let followerReads = 0;

  const apply = (node: Node, entry: Entry): boolean => {
    const { input } = entry;
    const current = node.state.get(input.key) ?? null;
    if (input.op === "write") {
      node.state.set(input.key, input.value);
      return true;
    }
    if (input.op === "cas" && current === input.expected) {
      node.state.set(input.key, input.value);
      return true;
    }
    return false;
  };

  const answer = (opId: number, output: KvOutput) => {
    if (random() < lossRate) return;
    schedule(between(1, 10), () => {
      const slot = waiting.get(opId);
      if (slot === undefined) return; // the client already gave up
      waiting.delete(opId);
      rec.ret(opId, output, now);
      clientStep(slot);
    });
  };

  const applyCommitted = (node: Node, isLeader: boolean) => {
    while (node.applied < node.commit && node.log[node.applied]) {
      const entry = node.log[node.applied]!;
      const swapped = apply(node, entry);
      node.applied++;
      if (isLeader) answer(entry.opId, { ok: swapped });
    }
  };

  const replicate = (index: number, entry: Entry) => {
    for (let f = 1; f < nodeCount; f++) {
      const follower = nodes[f];
      schedule(between(1, 25), () => {
        follower.log[index] = entry;
        applyCommitted(follower, false);
        schedule(between(1, 25), () => {
          acks[index]++;
          let advanced = false;
          while (
            leader.commit < leader.log.length &&
            acks[leader.commit] >= majority
          ) {
            leader.commit++;
            advanced = true;
          }
          if (!advanced) return;
          applyCommitted(leader, true);
          const commit = leader.commit;
          for (let g = 1; g < nodeCount; g++) {
            schedule(between(1, 40), () => {
              nodes[g].commit = Math.max(nodes[g].commit, commit);
              applyCommitted(nodes[g], false);
            });
          }
        });
      });
    }
  };

  const serve = (opId: number, input: KvInput) => {
    if (input.op === "read") {
      const node = staleReads ? nodes[between(0, nodeCount - 1)] : leader;
      if (node !== leader) followerReads++;
      answer(opId, { value: node.state.get(input.key) ?? null });
      return;
    }
    const entry = { input, opId };
    const index = leader.log.length;
    leader.log.push(entry);
    acks[index] = 1;
    replicate(index, entry);
  };

  const started = new Array<number>(clients).fill(0);
  const processOf = Array.from({ length: clients }, () => nextProcess++);
  const clientStep = (slot: number) => {
    if (started[slot] === opsPerClient) return;
    started[slot]++;
    schedule(between(0, 8), () => {
      const key = keys[between(0, keys.length - 1)];
      const roll = random();
      const input: KvInput = roll < 0.5
        ? { op: "read", key }
        : roll < 0.8
        ? { op: "write", key, value: between(1, 5) }
        : {
          op: "cas",
          key,
          expected: between(0, 5) || null,
          value: between(1, 5),
        };
      const opId = rec.call(processOf[slot], input, now);
      waiting.set(opId, slot);
      if (random() >= lossRate) {
        schedule(between(1, 10), () => serve(opId, input));
      }
      schedule(CLIENT_TIMEOUT_MS, () => {
        if (!waiting.has(opId)) return;
        waiting.delete(opId);
        rec.abandon(opId);
        processOf[slot] = nextProcess++;
        clientStep(slot);
      });
    });
  };

  for (let slot = 0; slot < clients; slot++) clientStep(slot);
  while (queue.length > 0) {
    const ev = queue.shift()!;
    now = ev.at;
    ev.run();
  }
  return { history: rec.history(), followerReads, endTime: now };
}
