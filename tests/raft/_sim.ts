/**
 * A seeded simulation of Raft drivers ({@linkcode RaftDriver}, the same code
 * the plugin runs) on a virtual clock: a network that delays, drops and
 * partitions, nodes that crash and restart from their storage, and clients
 * running concurrent read/write/cas operations whose history is recorded
 * for the linearizability checker. It also watches every proposal the state
 * machines apply: one applied at two log indexes (a re-sent copy applied as
 * well as the original) is a duplicate.
 *
 * @module
 */
import {
  RaftDriver,
  RaftTimeoutError,
  RaftUnavailableError,
} from "../../consensus/raft/driver.ts";
import { MemoryStorage } from "../../consensus/raft/storage.ts";
import type { Message } from "../../consensus/raft/types.ts";
import {
  HistoryRecorder,
  type KvInput,
  type KvOutput,
  type Operation,
} from "../../testing/linearizability.ts";
import { mulberry32 } from "../../core/random.ts";

/** Options of {@linkcode simulate}. */
export interface SimOptions {
  seed: number;
  nodes?: number;
  clients?: number;
  /** Virtual milliseconds to run clients for. */
  durationMs?: number;
  /** Serve reads locally without ReadIndex (the deliberately broken build). */
  unsafeLocalReads?: boolean;
  /** Inject crashes and partitions. @default {true} */
  faults?: boolean;
  /** Snapshot every this many applied entries (small: InstallSnapshot happens). @default {20000} */
  compactEvery?: number;
  /**
   * BROKEN ON PURPOSE, to show the duplicate check bites: the state machines
   * apply every copy of a re-sent proposal.
   * @default {false}
   */
  unsafeApplyCopies?: boolean;
}

/** What a run produced. */
export interface SimResult {
  history: Operation<KvInput, KvOutput>[];
  completed: number;
  crashes: number;
  partitions: number;
  /** Nodes whose storage holds a snapshot at the end. */
  snapshots: number;
  /** InstallSnapshot messages delivered. */
  installs: number;
  /** Proposals applied at more than one log index, as "id at i and j". */
  duplicates: string[];
}

interface Ev {
  at: number;
  seq: number;
  fn: () => void;
}

/** Runs one seeded simulation and returns the client history. */
export async function simulate(options: SimOptions): Promise<SimResult> {
  const o = {
    nodes: 3,
    clients: 5,
    durationMs: 5000,
    unsafeLocalReads: false,
    faults: true,
    compactEvery: 20_000,
    unsafeApplyCopies: false,
    ...options,
  };
  const rand = mulberry32(o.seed);
  const ids = Array.from({ length: o.nodes }, (_, i) => `n${i + 1}`);
  const events: Ev[] = [];
  let seq = 0;
  let now = 0;
  const at = (delay: number, fn: () => void) => {
    events.push({ at: now + delay, seq: seq++, fn });
  };
  const storages = new Map(ids.map((id) => [id, new MemoryStorage()]));
  const drivers = new Map<string, RaftDriver | undefined>();
  const cut = new Set<string>(); // "a|b": no traffic between a and b
  const pair = (a: string, b: string) => (a < b ? `${a}|${b}` : `${b}|${a}`);
  let crashes = 0;
  let partitions = 0;
  let installs = 0;
  const appliedAt = new Map<string, number>(); // proposal id -> log index
  const duplicates: string[] = [];

  const boot = (id: string) => {
    const d = new RaftDriver({
      id,
      voters: ids,
      storage: storages.get(id)!,
      tickMs: 0,
      electionTick: 10,
      heartbeatTick: 2,
      requestTimeoutTicks: 40,
      random: mulberry32(o.seed * 31 + id.charCodeAt(1) + crashes * 7),
      unsafeLocalReads: o.unsafeLocalReads,
      compactEvery: o.compactEvery,
      send: (to: string, ms: Message[]) => {
        if (cut.has(pair(id, to)) || rand() < 0.02) return;
        at(1 + Math.floor(rand() * 8), () => {
          const d = drivers.get(to);
          if (cut.has(pair(id, to)) || !d) return;
          installs += ms.filter((m) => m.type === "snap").length;
          d.receive(ms);
        });
      },
    });
    const m = d.machine;
    const applyProposal = m.applyProposal.bind(m);
    m.applyProposal = (pid, cmd) => {
      const r = o.unsafeApplyCopies ? m.apply(cmd) : applyProposal(pid, cmd);
      if (r) {
        // The driver sets its applied index to the entry's before applying.
        const first = appliedAt.get(pid);
        if (first === undefined) appliedAt.set(pid, d.applied);
        else if (first !== d.applied) {
          duplicates.push(`${pid} at ${first} and ${d.applied}`);
        }
      }
      return r;
    };
    drivers.set(id, d);
    d.start();
  };
  for (const id of ids) boot(id);
  // Each node ticks every 10 virtual ms, phases spread.
  const ticker = (id: string) => {
    drivers.get(id)?.tick();
    at(10, () => ticker(id));
  };
  for (const id of ids) at(Math.floor(rand() * 10), () => ticker(id));

  if (o.faults) {
    const fault = () => {
      const r = rand();
      const victim = ids[Math.floor(rand() * ids.length)];
      if (r < 0.35 && drivers.get(victim)) {
        crashes++;
        drivers.get(victim)!.stop();
        drivers.set(victim, undefined);
        at(50 + Math.floor(rand() * 250), () => boot(victim));
      } else if (r < 0.7) {
        partitions++;
        const links = ids.filter((x) => x !== victim).map((x) =>
          pair(victim, x)
        );
        for (const l of links) cut.add(l);
        at(50 + Math.floor(rand() * 300), () => {
          for (const l of links) cut.delete(l);
        });
      }
      if (now < o.durationMs) at(150 + Math.floor(rand() * 200), fault);
    };
    at(300, fault);
  }

  const rec = new HistoryRecorder<KvInput, KvOutput>();
  let completed = 0;
  let stopping = false;
  const client = (c: number) => {
    if (stopping) return;
    const up = ids.filter((id) => drivers.get(id));
    if (up.length === 0) return at(5, () => client(c));
    const d = drivers.get(up[Math.floor(rand() * up.length)])!;
    const key = rand() < 0.5 ? "x" : "y";
    const r = rand();
    const value = `${c}.${completed}.${seq}`;
    let input: KvInput;
    let run: () => Promise<KvOutput>;
    if (r < 0.4) {
      input = { op: "read", key };
      run = () => d.read(key).then((x) => ({ value: x.value }));
    } else if (r < 0.75) {
      input = { op: "write", key, value };
      run = () =>
        d.propose({ op: "write", key, value }).then(() => ({ ok: true }));
    } else {
      // Expect a value this client saw recently, or null.
      const expected = rand() < 0.3 ? null : lastSeen.get(key) ?? null;
      input = { op: "cas", key, expected, value };
      run = () =>
        d.propose({
          op: "cas",
          key,
          expect: expected as string | null,
          value,
        }).then((x) => ({ ok: x.ok }));
    }
    const id = rec.call(c, input, now);
    run().then((out) => {
      rec.ret(id, out, now);
      completed++;
      if ("value" in out && typeof out.value === "string") {
        lastSeen.set(key, out.value);
      }
    }, (err) => {
      if (err instanceof RaftUnavailableError) rec.fail(id);
      else if (err instanceof RaftTimeoutError) rec.abandon(id);
      else throw err;
    }).finally(() => at(1 + Math.floor(rand() * 5), () => client(c)));
  };
  const lastSeen = new Map<string, string>();
  for (let c = 0; c < o.clients; c++) at(200 + c, () => client(c));

  const flush = async () => {
    do {
      for (let i = 0; i < 4; i++) await Promise.resolve();
    } while ([...drivers.values()].some((d) => d?.busy));
  };
  const end = o.durationMs;
  while (events.length > 0) {
    events.sort((a, b) => a.at - b.at || a.seq - b.seq);
    const ev = events.shift()!;
    now = ev.at;
    if (now > end) {
      if (!stopping) {
        stopping = true;
        cut.clear();
      }
      if (now > end + 1000) break;
    }
    ev.fn();
    await flush();
  }
  for (const d of drivers.values()) d?.stop();
  await flush();
  const snapshots = [...storages.values()].filter((s) => s.snapshot).length;
  return {
    history: rec.history(),
    completed,
    crashes,
    partitions,
    snapshots,
    installs,
    duplicates: [...new Set(duplicates)],
  };
}
