/**
 * A seeded, deterministic simulation of a Raft cluster built on the pure
 * core: virtual time, a network that drops, duplicates, delays and reorders
 * messages, symmetric and one-way partitions, crash-restarts that lose every
 * write not yet persisted, pauses, and nodes whose clocks tick at different
 * rates. After every event it checks Raft's five safety properties (Figure
 * 3) plus ReadIndex freshness; a liveness mode heals the faults (but for one
 * permanent one-way link) and requires a leader and a new committed
 * operation within a bound.
 *
 * Clients behave like the driver: each proposal carries an id, one still
 * waiting when a leader of a newer term is known is proposed again, and the
 * state machines skip copies with {@linkcode AppliedProposals} (kept in
 * their snapshots). A proposal taking effect at two log indexes is a
 * violation.
 *
 * Everything random comes from one seeded PRNG, so a seed replays exactly
 * and gives the same trace hash.
 *
 * @module
 */
import { mulberry32 } from "../../core/random.ts";
import { EventHeap, FNV, fnv } from "../_shared/sim_events.ts";
import { AppliedProposals } from "./applied_proposals.ts";
import { createRaft, type RaftNode } from "./core.ts";
import { MemoryStorage } from "./storage.ts";
import type { Entry, Message, Ready } from "./types.ts";

/** Options for {@linkcode runRaftSim}. */
export interface RaftSimOptions {
  /** Cluster size. @default {3 or 5, drawn from the seed} */
  nodes?: number;
  /** Virtual milliseconds of chaos. @default {2000} */
  chaosMs?: number;
  /** After the chaos, heal and require progress within `livenessBoundMs`. @default {false} */
  liveness?: boolean;
  /** Virtual ms after healing by which a new operation must commit. @default {3000} */
  livenessBoundMs?: number;
  /** Compact a node's log once this many entries are applied past its snapshot. @default {4, 12 or 40, drawn from the seed} */
  snapshotEvery?: number;
  /**
   * A deliberately broken driver that sends a Ready's messages before it
   * persists the Ready; used to show that the checks catch the bug.
   * @default {false}
   */
  unsafeSendBeforePersist?: boolean;
  /** Propose membership changes (add a fresh node, remove a voter) during the chaos. @default {false} */
  membership?: boolean;
  /** Keep the trace lines in the report. @default {false} */
  keepTrace?: boolean;
  /**
   * A deliberately broken state machine that applies every copy of a
   * re-sent proposal; used to show that the checks catch it.
   * @default {false}
   */
  unsafeApplyCopies?: boolean;
}

/** What one simulated run saw. */
export interface RaftSimReport {
  seed: number;
  nodes: number;
  violations: string[];
  traceHash: string;
  events: number;
  /** Distinct (term, leader) pairs seen. */
  leaders: number;
  /** Highest index known committed at the end. */
  committed: number;
  crashes: number;
  snapshotsInstalled: number;
  readsServed: number;
  confChanges: number;
  /** Proposals proposed again to a newer term's leader. */
  reproposals: number;
  /** Copies of an applied proposal that the state machines skipped. */
  copiesSkipped: number;
  /** Liveness mode: virtual ms from healing to the first new committed operation (-1 if none within the bound). */
  recoveryMs?: number;
  trace?: string[];
}

interface SimPeer {
  id: string;
  node?: RaftNode;
  storage: MemoryStorage;
  /** Milliseconds per tick: clocks run at different rates. */
  tickMs: number;
  paused: boolean;
  held: (() => void)[];
  readyAt: boolean;
  incarnation: number;
  /** State machine: last applied index and a running digest of applied entries. */
  smApplied: number;
  digest: number;
  /** State machine: the proposals it applied (copies are skipped). */
  proposals: AppliedProposals;
  /** Client proposals waiting here: data → the term last proposed in, and when to give up. */
  waiting: Map<string, { term: number; until: number }>;
  proposalSeq: number;
  seenCommit: number;
  leaderView?: { term: number; first: number; terms: number[] };
}

/**
 * Runs one seeded simulation and reports violations (empty when safe).
 *
 * @example Usage
 * ```ts
 * import { runRaftSim } from "./_sim.ts";
 * const a = runRaftSim(7, { chaosMs: 300 });
 * const b = runRaftSim(7, { chaosMs: 300 });
 * a.violations.length; // 0
 * a.traceHash === b.traceHash; // true
 * ```
 */
export function runRaftSim(
  seed: number,
  options: RaftSimOptions = {},
): RaftSimReport {
  const rng = mulberry32(seed);
  const between = (lo: number, hi: number) => lo + (hi - lo) * rng();
  const pick = <T>(xs: T[]): T => xs[Math.floor(rng() * xs.length)];
  const nodeCount = options.nodes ?? (rng() < 0.5 ? 3 : 5);
  const chaosMs = options.chaosMs ?? 2000;
  const boundMs = options.livenessBoundMs ?? 3000;
  const snapshotEvery = options.snapshotEvery ?? pick([4, 12, 40]);
  const unsafe = options.unsafeSendBeforePersist ?? false;
  const applyCopies = options.unsafeApplyCopies ?? false;
  // One entry per append in half the runs: more partial replication.
  const maxSizePerMsg = rng() < 0.5 ? 1 : 256;
  const heartbeatTick = pick([1, 2, 3]);
  const maxInflight = pick([1, 4, 16]);

  const report: RaftSimReport = {
    seed,
    nodes: nodeCount,
    violations: [],
    traceHash: "",
    events: 0,
    leaders: 0,
    committed: 0,
    crashes: 0,
    snapshotsInstalled: 0,
    readsServed: 0,
    confChanges: 0,
    reproposals: 0,
    copiesSkipped: 0,
  };
  let now = 0;
  let hash = FNV;
  const trace = (s: string) => {
    const line = `${now.toFixed(3)} ${s}`;
    hash = fnv(hash, line + "\n");
    if (options.keepTrace) (report.trace ??= []).push(line);
  };
  const violate = (what: string) => {
    if (report.violations.length < 10) {
      report.violations.push(`seed ${seed} at t=${now.toFixed(3)}: ${what}`);
    }
  };

  // ---- the event queue (consensus/_shared/sim_events.ts) -----------
  const events = new EventHeap();
  const at = (delay: number, fn: () => void) => events.push(now + delay, fn);

  // ---- global records for the safety checks -------------------------
  const leaderOf = new Map<number, string>();
  const committedTerm: number[] = []; // index -> term of the committed entry
  const committedIn: number[] = []; // index -> lowest term a node saw it committed in
  let maxCommit = 0;
  const appliedKey: string[] = []; // index -> entry key applied
  const appliedDigest: number[] = [FNV]; // index -> digest of 1..index
  const proposalAt = new Map<string, number>(); // proposal id -> index it took effect at
  const readIssuedAt = new Map<string, number>();
  const liveOps = new Set<string>();
  let firstLiveCommitAt = -1;

  // ---- peers --------------------------------------------------------
  const peers = new Map<string, SimPeer>();
  const initial = Array.from({ length: nodeCount }, (_, i) => `n${i + 1}`);
  let nextNodeId = nodeCount + 1;
  const cut = new Set<string>();
  let permanentCut = "";
  let dropRate = 0, dupRate = 0;
  let chaos = true;

  const boot = (p: SimPeer, peersList: string[]) => {
    p.incarnation++;
    const st = p.storage.state();
    p.node = createRaft({
      id: p.id,
      peers: peersList,
      electionTick: 10,
      heartbeatTick,
      random: mulberry32(fnv(seed, `${p.id}/${p.incarnation}`)),
      maxSizePerMsg,
      maxInflight,
      storage: st,
    });
    // The state machine restarts from the snapshot and replays the log.
    p.smApplied = st.snapshot?.index ?? 0;
    restoreMachine(p, st.snapshot?.data);
    p.waiting.clear();
    p.proposalSeq = 0;
    p.seenCommit = p.node.log.committed;
    p.leaderView = undefined;
    const inc = p.incarnation;
    const loop = () => {
      if (p.incarnation !== inc || !p.node) return;
      if (!p.paused) {
        p.node.tick();
        afterStep(p);
      }
      at(p.tickMs, loop);
    };
    at(between(0, p.tickMs), loop);
    scheduleReady(p);
  };

  const addPeer = (id: string, peersList: string[]) => {
    const p: SimPeer = {
      id,
      storage: new MemoryStorage(),
      tickMs: 10 * between(0.6, 1.6),
      paused: false,
      held: [],
      readyAt: false,
      incarnation: 0,
      smApplied: 0,
      digest: FNV,
      proposals: new AppliedProposals(),
      waiting: new Map(),
      proposalSeq: 0,
      seenCommit: 0,
    };
    peers.set(id, p);
    boot(p, peersList);
    return p;
  };

  const afterStep = (p: SimPeer) => {
    reroute(p);
    check(p);
    scheduleReady(p);
  };

  // What the driver does: propose again what waits since an older term.
  const reroute = (p: SimPeer) => {
    const n = p.node;
    if (!n || n.lead === "") return;
    for (const [data, w] of p.waiting) {
      if (w.until < now) p.waiting.delete(data);
      else if (w.term < n.term && n.propose(data)) {
        w.term = n.term;
        report.reproposals++;
        trace(`repropose ${p.id} ${data}`);
      }
    }
  };

  const restoreMachine = (p: SimPeer, data?: string) => {
    const m = data ? JSON.parse(data) : undefined;
    p.digest = m?.digest ?? FNV;
    p.proposals = new AppliedProposals();
    if (m) p.proposals.restore(m.proposals);
  };

  const scheduleReady = (p: SimPeer) => {
    if (p.readyAt || !p.node?.hasReady()) return;
    p.readyAt = true;
    const inc = p.incarnation;
    at(between(0, 2), () => {
      p.readyAt = false;
      if (p.incarnation !== inc || !p.node) return;
      if (p.paused) {
        p.held.push(() => scheduleReady(p));
        return;
      }
      handleReady(p);
    });
  };

  const handleReady = (p: SimPeer) => {
    const node = p.node!;
    const rd = node.ready();
    trace(
      `ready ${p.id} hs=${
        rd.hardState ? JSON.stringify(rd.hardState) : "-"
      } ents=${rd.entries.length} msgs=${rd.messages.length} apply=${rd.committed.length}${
        rd.snapshot ? ` snap=${rd.snapshot.index}` : ""
      }`,
    );
    if (unsafe) {
      // The bug under test: messages leave before their state is durable.
      for (const m of rd.messages) send(m);
      const inc = p.incarnation;
      // A fixed delay keeps the writes in order (FIFO in the event queue).
      at(15, () => {
        if (p.incarnation === inc) p.storage.save(rd);
      });
    } else {
      const before = p.storage.hardState;
      const hs = rd.hardState;
      if (
        hs &&
        (hs.term < before.term ||
          (hs.term === before.term && before.vote !== "" &&
            hs.vote !== before.vote))
      ) {
        violate(
          `${p.id} persisted term ${hs.term} vote '${hs.vote}' over term ${before.term} vote '${before.vote}'`,
        );
      }
      p.storage.save(rd);
      for (const m of rd.messages) send(m);
    }
    applyReady(p, rd);
    node.advance(rd);
    if (node.log.applied - node.log.snapIndex >= snapshotEvery) {
      const snap = node.compact(
        node.log.applied,
        JSON.stringify({ digest: p.digest, proposals: p.proposals.toJSON() }),
      );
      if (!unsafe) p.storage.compact(snap);
      trace(`compact ${p.id} ${snap.index}`);
    }
    check(p);
    scheduleReady(p);
  };

  const applyReady = (p: SimPeer, rd: Ready) => {
    if (rd.snapshot) {
      const s = rd.snapshot;
      if (appliedDigest[s.index] !== JSON.parse(s.data).digest) {
        violate(
          `State Machine Safety: ${p.id} installed a snapshot at ${s.index} whose state differs from what others applied`,
        );
      }
      p.smApplied = s.index;
      restoreMachine(p, s.data);
      report.snapshotsInstalled++;
    }
    for (const e of rd.committed) apply(p, e);
    for (const rs of rd.readStates) {
      const issued = readIssuedAt.get(rs.context);
      if (issued === undefined) continue;
      readIssuedAt.delete(rs.context);
      report.readsServed++;
      if (rs.index < issued) {
        violate(
          `ReadIndex: ${p.id} answered read ${rs.context} at ${rs.index}, below the commit index ${issued} when it was issued`,
        );
      }
    }
  };

  const apply = (p: SimPeer, e: Entry) => {
    if (e.index !== p.smApplied + 1) {
      violate(
        `State Machine Safety: ${p.id} applied index ${e.index} after ${p.smApplied}`,
      );
    }
    // Whether the entry took effect is part of the state every node agrees on.
    const key = `${e.term}/${e.type}/${e.data}/${applyOnce(p, e)}`;
    const seen = appliedKey[e.index];
    if (seen === undefined) {
      appliedKey[e.index] = key;
      appliedDigest[e.index] = fnv(appliedDigest[e.index - 1] ?? FNV, key);
    } else if (seen !== key) {
      violate(
        `State Machine Safety: ${p.id} applied ${key} at ${e.index} where another node applied ${seen}`,
      );
    }
    p.digest = fnv(p.digest, key);
    p.smApplied = e.index;
    if (liveOps.has(e.data) && firstLiveCommitAt < 0) firstLiveCommitAt = now;
  };

  /** Applies a client proposal unless a copy took effect before; "" for other entries. */
  const applyOnce = (p: SimPeer, e: Entry): string => {
    if (e.type !== "normal" || !e.data.startsWith("{")) return "";
    const { id } = JSON.parse(e.data) as { id: string };
    p.waiting.delete(e.data);
    if (!p.proposals.admit(id) && !applyCopies) {
      report.copiesSkipped++;
      return "skip";
    }
    const first = proposalAt.get(id);
    if (first === undefined) proposalAt.set(id, e.index);
    else if (first !== e.index) {
      violate(
        `Exactly once: ${p.id} applied proposal ${id} at ${e.index}; it took effect at ${first} before`,
      );
    }
    return "apply";
  };

  // ---- the five safety properties, checked after every event ---------
  const check = (p: SimPeer) => {
    const n = p.node;
    if (!n) return;
    const log = n.log;
    if (n.role === "leader") {
      // Election Safety: at most one leader per term.
      const l = leaderOf.get(n.term);
      if (l === undefined) {
        leaderOf.set(n.term, n.id);
        report.leaders++;
        trace(`leader ${n.id} term ${n.term}`);
        // Leader Completeness: entries committed in earlier terms are here.
        for (let i = 1; i <= maxCommit; i++) {
          if (committedIn[i] >= n.term || i <= log.snapIndex) continue;
          if (log.term(i) !== committedTerm[i]) {
            violate(
              `Leader Completeness: leader ${n.id} of term ${n.term} lacks entry ${i} (term ${
                committedTerm[i]
              }) committed in term ${committedIn[i]}`,
            );
            break;
          }
        }
      } else if (l !== n.id) {
        violate(
          `Election Safety: ${n.id} and ${l} are both leaders of term ${n.term}`,
        );
      }
      // Leader Append-Only: a leader never overwrites or deletes its entries.
      const v = p.leaderView;
      if (v && v.term === n.term) {
        const last = v.first + v.terms.length - 1;
        if (log.lastIndex() < last) {
          violate(
            `Leader Append-Only: leader ${n.id} shrank its log from ${last} to ${log.lastIndex()}`,
          );
        }
        for (let i = Math.max(v.first, log.firstIndex()); i <= last; i++) {
          if (log.term(i) !== v.terms[i - v.first]) {
            violate(
              `Leader Append-Only: leader ${n.id} rewrote entry ${i}`,
            );
            break;
          }
        }
      }
      const terms: number[] = [];
      for (let i = log.firstIndex(); i <= log.lastIndex(); i++) {
        terms.push(log.term(i)!);
      }
      p.leaderView = { term: n.term, first: log.firstIndex(), terms };
    } else p.leaderView = undefined;

    // Committed entries never change (and feed Leader Completeness).
    for (let i = p.seenCommit + 1; i <= log.committed; i++) {
      if (i <= log.snapIndex) continue;
      const t = log.term(i)!;
      if (committedTerm[i] === undefined) {
        committedTerm[i] = t;
        committedIn[i] = n.term;
      } else if (committedTerm[i] !== t) {
        violate(
          `State Machine Safety: ${n.id} committed entry ${i} of term ${t}, another node committed term ${
            committedTerm[i]
          }`,
        );
      } else committedIn[i] = Math.min(committedIn[i], n.term);
    }
    p.seenCommit = Math.max(p.seenCommit, log.committed);
    maxCommit = Math.max(maxCommit, log.committed);

    // Log Matching: same index and term → identical up to there.
    for (const q of peers.values()) {
      if (q === p || !q.node) continue;
      const o = q.node.log;
      const lo = Math.max(log.firstIndex(), o.firstIndex());
      let k = Math.min(log.lastIndex(), o.lastIndex());
      while (k >= lo && log.term(k) !== o.term(k)) k--;
      for (let i = k - 1; i >= lo; i--) {
        if (log.term(i) !== o.term(i)) {
          violate(
            `Log Matching: ${n.id} and ${q.id} agree at ${k} but differ at ${i}`,
          );
          break;
        }
      }
    }
  };

  // ---- the network --------------------------------------------------
  const send = (m: Message) => {
    if (cut.has(`${m.from}->${m.to}`)) {
      // The driver sees the link down and says so, as etcd's does.
      peers.get(m.from)?.node?.reportUnreachable(m.to);
      return;
    }
    if (chaos && rng() < dropRate) {
      trace(`drop ${m.type} ${m.from}->${m.to}`);
      return;
    }
    const copies = chaos && rng() < dupRate ? 2 : 1;
    // Over the wire: the receiver gets its own copy, as JSON carries it.
    const wire = JSON.stringify(m);
    for (let c = 0; c < copies; c++) {
      const delay = chaos && rng() < 0.05 ? between(20, 80) : between(1, 8);
      at(delay, () => deliver(JSON.parse(wire)));
    }
  };

  const deliver = (m: Message) => {
    const p = peers.get(m.to);
    if (!p?.node || cut.has(`${m.from}->${m.to}`)) return;
    if (p.paused) {
      p.held.push(() => deliver(m));
      return;
    }
    trace(
      `recv ${m.to}<-${m.from} ${m.type} t${m.term} i${m.index ?? ""} n${
        m.entries?.length ?? 0
      }${m.reject ? " rej" : ""}`,
    );
    p.node.step(m);
    afterStep(p);
  };

  // ---- faults -------------------------------------------------------
  const live = () => [...peers.values()].filter((p) => p.node);

  const crash = (p: SimPeer) => {
    if (!p.node) return;
    report.crashes++;
    trace(`crash ${p.id}`);
    p.node = undefined;
    p.incarnation++;
    p.readyAt = false;
    p.held = [];
    p.paused = false;
    at(between(20, 400), () => restart(p));
  };

  const restart = (p: SimPeer) => {
    if (p.node) return;
    trace(`restart ${p.id}`);
    boot(p, initial.includes(p.id) ? initial : []);
  };

  const resume = (p: SimPeer) => {
    if (!p.paused) return;
    p.paused = false;
    trace(`resume ${p.id}`);
    const held = p.held;
    p.held = [];
    for (const f of held) f();
  };

  const currentLeader = () =>
    live().find((p) => p.node!.role === "leader" && p.node!.promotable());

  const nemesis = () => {
    if (!chaos) return;
    const all = [...peers.values()];
    const r = rng();
    if (r < 0.15) {
      const side = new Set(all.filter(() => rng() < 0.5).map((p) => p.id));
      for (const a of all) {
        for (const b of all) {
          if (side.has(a.id) !== side.has(b.id)) cut.add(`${a.id}->${b.id}`);
        }
      }
      trace(`partition ${[...side].join(",")}`);
      at(between(100, 600), heal);
    } else if (r < 0.3) {
      const a = pick(all), b = pick(all);
      if (a !== b) {
        cut.add(`${a.id}->${b.id}`);
        trace(`cut ${a.id}->${b.id}`);
        at(between(100, 800), () => cut.delete(`${a.id}->${b.id}`));
      }
    } else if (r < 0.4) {
      const l = currentLeader();
      if (l) {
        for (const o of all) {
          if (o !== l) {
            cut.add(`${l.id}->${o.id}`);
            cut.add(`${o.id}->${l.id}`);
          }
        }
        trace(`isolate leader ${l.id}`);
        at(between(100, 500), heal);
      }
    } else if (r < 0.55) {
      const target = rng() < 0.5 ? currentLeader() ?? pick(all) : pick(all);
      crash(target);
    } else if (r < 0.67) {
      const p = pick(all);
      if (p.node && !p.paused) {
        p.paused = true;
        trace(`pause ${p.id}`);
        at(between(30, 500), () => resume(p));
      }
    } else if (r < 0.8) {
      dropRate = rng() < 0.5 ? 0 : between(0, 0.2);
      dupRate = rng() < 0.5 ? 0 : between(0, 0.1);
      trace(`net drop=${dropRate.toFixed(3)} dup=${dupRate.toFixed(3)}`);
    } else if (r < 0.88) {
      const l = currentLeader();
      const others = all.filter((p) => p !== l && p.node?.promotable());
      if (l && others.length > 0) {
        const to = pick(others).id;
        trace(`transfer ${l.id}->${to}`);
        l.node!.transferLeader(to);
        afterStep(l);
      }
    } else if (options.membership) {
      const l = currentLeader();
      if (l) {
        const voters = l.node!.voters();
        if (voters.length > 3 && rng() < 0.5) {
          const victim = pick(voters);
          if (l.node!.proposeConfChange({ type: "remove", node: victim })) {
            report.confChanges++;
            trace(`conf remove ${victim}`);
          }
        } else if (voters.length < 5) {
          const id = `n${nextNodeId}`;
          if (l.node!.proposeConfChange({ type: "add", node: id })) {
            nextNodeId++;
            report.confChanges++;
            trace(`conf add ${id}`);
            addPeer(id, []);
          }
        }
        afterStep(l);
      }
    }
    at(between(30, 150), nemesis);
  };

  const heal = () => {
    cut.clear();
    if (permanentCut) cut.add(permanentCut);
    trace("heal");
  };

  // ---- clients ------------------------------------------------------
  let opNo = 0;
  const client = () => {
    const targets = live().filter((p) => !p.paused);
    if (targets.length > 0) {
      const p = pick(targets);
      if (rng() < 0.8) {
        const data = JSON.stringify({
          id: `${p.id}.${p.incarnation}/${p.proposalSeq + 1}`,
          c: `${chaos ? "op" : "live"}-${++opNo}`,
        });
        if (!chaos) liveOps.add(data);
        trace(`propose ${p.id} ${data}`);
        if (p.node!.propose(data)) {
          p.proposalSeq++;
          p.waiting.set(data, { term: p.node!.term, until: now + 1000 });
        }
      } else {
        const ctx = `read-${++opNo}`;
        readIssuedAt.set(ctx, maxCommit);
        trace(`read ${p.id} ${ctx}`);
        p.node!.readIndex(ctx);
      }
      afterStep(p);
    }
    at(between(5, 40), client);
  };

  for (const id of initial) addPeer(id, initial);
  at(between(10, 100), nemesis);
  at(between(5, 40), client);

  const runUntil = (end: number, stop?: () => boolean) => {
    while (events.nextAt() <= end) {
      const ev = events.pop()!;
      now = ev.at;
      ev.fn();
      report.events++;
      if (report.violations.length > 0 || stop?.()) return;
    }
    now = end;
  };

  runUntil(chaosMs);
  if (options.liveness && report.violations.length === 0) {
    chaos = false;
    dropRate = dupRate = 0;
    const all = [...peers.values()].filter((p) => initial.includes(p.id));
    const a = pick(all), b = pick(all.filter((p) => p !== a));
    permanentCut = `${a.id}->${b.id}`;
    heal();
    trace(`permanent cut ${permanentCut}`);
    for (const p of peers.values()) {
      resume(p);
      if (!p.node) restart(p);
    }
    const healedAt = now;
    runUntil(healedAt + boundMs, () => firstLiveCommitAt >= 0);
    report.recoveryMs = firstLiveCommitAt >= 0
      ? firstLiveCommitAt - healedAt
      : -1;
    if (firstLiveCommitAt < 0) {
      const states = [...peers.values()].map((p) =>
        p.node
          ? `${p.id}:${p.node.role}/t${p.node.term}/c${p.node.log.committed}/v${
            p.node.voters().join(",")
          }`
          : `${p.id}:down`
      );
      violate(
        `Liveness: no operation committed within ${boundMs} ms of healing (cut ${permanentCut}; ${
          states.join(" ")
        })`,
      );
    }
  }
  report.committed = maxCommit;
  report.traceHash = hash.toString(16).padStart(8, "0");
  return report;
}
