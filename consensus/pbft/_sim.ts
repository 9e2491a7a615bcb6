/**
 * A seeded, deterministic Byzantine simulation of PBFT replicas built on the
 * pure core: virtual time; a network that drops, duplicates, delays and
 * reorders; partitions and crash-restarts of honest replicas (restarted from
 * what they persisted); and up to f replicas run by an adversary that
 * equivocates, forges and replays messages, sends conflicting view changes
 * and new views, delays selectively, lies in state transfer, sends clients
 * false replies, or goes silent.
 *
 * Checked after every event: no two honest replicas execute different
 * batches at one sequence number, in any incarnation (so nothing committed
 * is lost by a view change), honest replicas' checkpointed states agree,
 * and a client accepts a result only on f + 1 matching replies and only if
 * it is the result honest replicas computed. Clients run read/write/cas
 * operations whose history goes to the linearizability checker. A liveness
 * mode heals the network (the adversary keeps going) and requires a new
 * request to be accepted within a bound.
 *
 * Everything random comes from one seeded PRNG: a seed replays exactly.
 *
 * @module
 */
import { mulberry32 } from "../../core/random.ts";
import { EventHeap, FNV, fnv } from "../_shared/sim_events.ts";
import {
  check,
  HistoryRecorder,
  type KvInput,
  kvModel,
  type KvOutput,
  type Operation,
} from "../../testing/linearizability.ts";
import {
  batchDigest,
  createPbft,
  macInput,
  type PbftNode,
  type PbftStatus,
  requestSigner,
  signInput,
  signRequest,
} from "./core.ts";
import type {
  Checkpoint,
  NewView,
  PbftAuth,
  PbftMessage,
  PbftPayload,
  PbftRecord,
  PbftRequest,
  PrePrepare,
  ViewChange,
} from "./types.ts";

/** What the adversary's replicas do (each picks some from the seed). */
export type Behaviour =
  | "equivocate"
  | "forge"
  | "replay"
  | "conflicting-view-change"
  | "silent"
  | "silent-later"
  | "delay"
  | "lie-state"
  | "false-replies"
  | "invent-request";

/** Every behaviour, for sweeps. */
export const BEHAVIOURS: Behaviour[] = [
  "equivocate",
  "forge",
  "replay",
  "conflicting-view-change",
  "silent",
  "silent-later",
  "delay",
  "lie-state",
  "false-replies",
  "invent-request",
];

/** Options for {@linkcode runPbftSim}. */
export interface PbftSimOptions {
  /** Replicas: 4 (f = 1) or 7 (f = 2). @default {4 or 7, drawn from the seed} */
  replicas?: number;
  /** Byzantine replicas (≤ f). @default {f in most runs, drawn from the seed} */
  byzantine?: number;
  /** Force these behaviours on every Byzantine replica. @default {drawn from the seed} */
  behaviours?: Behaviour[];
  /** Make the first primary Byzantine. @default {drawn from the seed} */
  byzantinePrimary?: boolean;
  /** Virtual ms of chaos. @default {1500} */
  chaosMs?: number;
  /** After the chaos, heal and require a new request accepted within `livenessBoundMs`. @default {false} */
  liveness?: boolean;
  /** @default {6000} */
  livenessBoundMs?: number;
  /** Network faults (drops, duplicates, partitions, crash-restarts) for honest replicas. @default {true} */
  faults?: boolean;
  /** Keep the trace lines. @default {false} */
  keepTrace?: boolean;
  /** BROKEN ON PURPOSE: replicas that make a request prepared (correct: 2f + 1). */
  unsafePrepareQuorum?: number;
  /** BROKEN ON PURPOSE: the new view trusts the newest prepared claim (no rules A1/A2). */
  unsafeNewestClaim?: boolean;
  /** BROKEN ON PURPOSE: matching replies a client accepts a result on (correct: f + 1). */
  unsafeClientQuorum?: number;
  /** BROKEN ON PURPOSE: replicas take requests without checking their clients' signatures. */
  unsafeTrustRequests?: boolean;
}

/** What one run saw. */
export interface PbftSimReport {
  seed: number;
  replicas: number;
  byzantine: string[];
  behaviours: Behaviour[];
  violations: string[];
  traceHash: string;
  events: number;
  /** Highest sequence number executed by an honest replica. */
  executed: number;
  /** Requests clients accepted. */
  accepted: number;
  viewChanges: number;
  /** Highest view an honest replica reached. */
  maxView: number;
  stateTransfers: number;
  /** Batches honest replicas were handed after asking for them (a new view chose a batch they lacked). */
  batchFetches: number;
  crashes: number;
  /** Messages honest replicas rejected (bad MAC, signature or shape). */
  rejected: number;
  /** Liveness mode: ms from healing to the first accepted new request (-1 if none in the bound). */
  recoveryMs?: number;
  /** The clients' history, for the linearizability checker. */
  history: Operation<KvInput, KvOutput>[];
  linearizable: "ok" | "illegal" | "unknown";
  /** Each replica's status at the end. */
  final: (PbftStatus & { byzantine: boolean })[];
  trace?: string[];
}

/**
 * A 64-bit stand-in digest (two 32-bit hashes): fast, and the adversary
 * does not search for collisions.
 *
 * @example Usage
 * ```ts
 * import { hash64 } from "./_sim.ts";
 * hash64("a") === hash64("a"); // true
 * ```
 */
export function hash64(s: string): string {
  let a = FNV, b = 0x9747b28c;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193) >>> 0;
    b = Math.imul(b ^ c, 0x5bd1e995) >>> 0;
    b = (b ^ (b >>> 15)) >>> 0;
  }
  return a.toString(16).padStart(8, "0") + b.toString(16).padStart(8, "0");
}

/**
 * Stand-in cryptography: MACs and signatures keyed by secrets that only
 * their owners' code uses, so the adversary cannot forge them.
 *
 * @example Usage
 * ```ts
 * import { fakeAuth } from "./_sim.ts";
 * const secret = (id: string) => `s-${id}`;
 * const a = fakeAuth("1", secret), b = fakeAuth("2", secret);
 * b.checkMac("1", "hi", a.mac("2", "hi")); // true
 * ```
 */
export function fakeAuth(
  me: string,
  secret: (who: string) => string,
): PbftAuth {
  const link = (a: string, b: string) =>
    a < b ? `${secret(a)}|${secret(b)}` : `${secret(b)}|${secret(a)}`;
  return {
    digest: hash64,
    mac: (to, data) => hash64(link(me, to) + data),
    checkMac: (from, data, mac) => hash64(link(from, me) + data) === mac,
    sign: (data) => hash64(secret(me) + "#" + data),
    verify: (r, data, sig) => hash64(secret(r) + "#" + data) === sig,
  };
}

/** The replicated KV with a last-reply table per client (exactly once). */
class KvApp {
  kv: Record<string, string> = {};
  last: Record<string, { t: number; result: string }> = {};
  apply(r: PbftRequest): string | undefined {
    const prev = this.last[r.client];
    if (prev && prev.t >= r.t) return undefined;
    let result: string;
    try {
      const op = JSON.parse(r.op);
      const cur = this.kv[op.key] ?? null;
      if (op.op === "read") result = JSON.stringify({ value: cur });
      else if (op.op === "write") {
        this.kv[op.key] = String(op.value);
        result = JSON.stringify({ ok: true });
      } else if (op.op === "cas") {
        const ok = cur === op.expected;
        if (ok) this.kv[op.key] = String(op.value);
        result = JSON.stringify({ ok });
      } else result = JSON.stringify({ error: "bad op" });
    } catch {
      result = JSON.stringify({ error: "bad op" });
    }
    this.last[r.client] = { t: r.t, result };
    return result;
  }
  serialize(): string {
    const sort = (o: Record<string, unknown>) =>
      Object.fromEntries(
        Object.keys(o).sort().map((k) => [k, o[k]]),
      );
    return JSON.stringify({ kv: sort(this.kv), last: sort(this.last) });
  }
  static from(data: string): KvApp {
    const a = new KvApp();
    if (data !== "") {
      const o = JSON.parse(data);
      a.kv = o.kv;
      a.last = o.last;
    }
    return a;
  }
}

interface Replica {
  id: string;
  byzantine: boolean;
  node?: PbftNode;
  records: PbftRecord[];
  app: KvApp;
  down: boolean;
  incarnation: number;
  tickMs: number;
  /** Adversary: messages this replica received (for replays). */
  seen: PbftMessage[];
  /** Adversary: its own earlier messages (valid MACs) for replays. */
  sent: PbftMessage[];
  silentFrom: number;
  /** The view it is in, with "?" while changing (traced when it moves). */
  where?: string;
}

interface Client {
  id: string;
  t: number;
  op?: {
    req: PbftRequest;
    input: KvInput;
    recId: number;
    sentAt: number;
    replies: Map<string, string>;
  };
}

/**
 * Runs one seeded simulation; `violations` is empty when safe.
 *
 * @example Usage
 * ```ts
 * import { runPbftSim } from "./_sim.ts";
 * const a = runPbftSim(7, { chaosMs: 300 });
 * const b = runPbftSim(7, { chaosMs: 300 });
 * a.violations.length; // 0
 * a.traceHash === b.traceHash; // true
 * ```
 */
export function runPbftSim(
  seed: number,
  options: PbftSimOptions = {},
): PbftSimReport {
  const rng = mulberry32(seed);
  const between = (lo: number, hi: number) => lo + (hi - lo) * rng();
  const pick = <T>(xs: T[]): T => xs[Math.floor(rng() * xs.length)];
  const n = options.replicas ?? (rng() < 0.7 ? 4 : 7);
  const f = Math.floor((n - 1) / 3);
  const byzCount = options.byzantine ??
    (rng() < 0.85 ? f : Math.floor(rng() * (f + 1)));
  const chaosMs = options.chaosMs ?? 1500;
  const boundMs = options.livenessBoundMs ?? 6000;
  const faults = options.faults ?? true;
  const ids = Array.from({ length: n }, (_, i) => `r${i}`);
  const K = pick([2, 4, 8]);
  const L = K * pick([2, 4]);
  const clientIds = ["c0", "c1", "c2"];
  const secrets = new Map(
    [...ids, ...clientIds].map((id) => [id, `${seed}:${id}:${rng()}`]),
  );
  const secret = (who: string) => secrets.get(who) ?? "?";

  // The adversary's replicas: the first primary in about half the runs.
  const byzPrimary = options.byzantinePrimary ?? rng() < 0.5;
  const byz = new Set<string>();
  if (byzCount > 0 && byzPrimary) byz.add(ids[0]);
  while (byz.size < byzCount) byz.add(pick(ids.slice(1)));
  const behaviours: Behaviour[] = options.behaviours ??
    BEHAVIOURS.filter(() => rng() < 0.5);
  if (behaviours.length === 0) behaviours.push(pick(BEHAVIOURS));
  const does = (b: Behaviour) => byz.size > 0 && behaviours.includes(b);

  const report: PbftSimReport = {
    seed,
    replicas: n,
    byzantine: [...byz],
    behaviours: byz.size > 0 ? behaviours : [],
    violations: [],
    traceHash: "",
    events: 0,
    executed: 0,
    accepted: 0,
    viewChanges: 0,
    maxView: 0,
    stateTransfers: 0,
    batchFetches: 0,
    crashes: 0,
    rejected: 0,
    history: [],
    linearizable: "ok",
    final: [],
  };
  let now = 0;
  let hash = FNV;
  const trace = (s: string) => {
    const line = `${now.toFixed(2)} ${s}`;
    hash = fnv(hash, line + "\n");
    if (options.keepTrace) (report.trace ??= []).push(line);
  };
  const violate = (what: string) => {
    if (report.violations.length < 10) {
      report.violations.push(`seed ${seed} at t=${now.toFixed(2)}: ${what}`);
    }
  };

  // ---- event queue (consensus/_shared/sim_events.ts) ----------------
  const events = new EventHeap();
  const at = (delay: number, fn: () => void) => events.push(now + delay, fn);

  // ---- network -------------------------------------------------------
  let healed = false;
  const cut = new Set<string>();
  const dropP = faults ? pick([0, 0.02, 0.08]) : 0;
  const dupP = faults ? 0.02 : 0;
  const slowVictims = new Set(ids.filter((id) => !byz.has(id) && rng() < 0.4));

  const replicas = new Map<string, Replica>();
  const clients: Client[] = [];
  const rec = new HistoryRecorder<KvInput, KvOutput>();

  const transmit = (m: PbftMessage, extraDelay = 0) => {
    const fromByz = byz.has(m.from);
    if (!fromByz && !healed) {
      if (cut.has(`${m.from}>${m.to}`) || rng() < dropP) return;
    }
    const copies = !healed && rng() < dupP ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      at(between(1, 12) + extraDelay, () => deliver(m));
    }
  };

  const deliver = (m: PbftMessage) => {
    const r = replicas.get(m.to);
    if (!r || r.down || !r.node) return;
    report.events++;
    trace(`${m.from}>${m.to} ${m.payload.type}`);
    if (r.byzantine) {
      r.seen.length < 200 && r.seen.push(m);
      answerFetch(r, m);
    } else if (m.payload.type === "batch") report.batchFetches++;
    r.node.step(m);
    drain(r);
  };

  // ---- honest and Byzantine output ------------------------------------
  const committedAt = new Map<number, string>();
  /** Every request the clients made: (client, t, op). */
  const submitted = new Set<string>();
  const checkpointAt = new Map<number, string>();
  const results = new Map<string, string>();

  const drain = (r: Replica) => {
    const node = r.node!;
    while (node.hasReady()) {
      const rd = node.ready();
      if (rd.compact) r.records = [...rd.compact];
      r.records.push(...rd.persist);
      for (const m of [...rd.early, ...rd.messages]) {
        if (r.byzantine) adversarySend(r, m);
        else transmit(m);
      }
      if (rd.snapshot) {
        r.app = KvApp.from(rd.snapshot.data);
        if (!r.byzantine) {
          report.stateTransfers++;
          trace(`${r.id} installs state at ${rd.snapshot.seq}`);
        }
      }
      for (const e of rd.executed) {
        if (!r.byzantine) {
          trace(`${r.id} executes ${e.seq} ${e.digest}`);
          const had = committedAt.get(e.seq);
          if (had === undefined) committedAt.set(e.seq, e.digest);
          else if (had !== e.digest) {
            violate(
              `agreement: ${r.id} executed ${e.digest} at ${e.seq}, another honest replica ${had}`,
            );
          }
          report.executed = Math.max(report.executed, e.seq);
        }
        for (const q of e.batch) {
          if (
            !r.byzantine && !byz.has(requestSigner(q.client)) &&
            !submitted.has(`${q.client}\u0000${q.t}\u0000${q.op}`)
          ) {
            violate(
              `authenticity: ${r.id} executed ${q.client}/${q.t} ${q.op} at ${e.seq}, which no client made`,
            );
          }
          const result = r.app.apply(q);
          if (result === undefined) continue;
          if (!r.byzantine) {
            const key = `${q.client}:${q.t}`;
            const had = results.get(key);
            if (had === undefined) results.set(key, result);
            else if (had !== result) {
              violate(
                `result: ${r.id} computed ${result} for ${key}, another honest replica ${had}`,
              );
            }
          }
          replyTo(r, q.client, q.t, result);
        }
        if (e.checkpoint) {
          const data = r.app.serialize();
          if (!r.byzantine) {
            const had = checkpointAt.get(e.seq);
            if (had === undefined) checkpointAt.set(e.seq, data);
            else if (had !== data) {
              violate(`checkpoint: ${r.id}'s state at ${e.seq} differs`);
            }
          }
          node.checkpoint(e.seq, data);
        }
      }
    }
    if (!r.byzantine) {
      report.maxView = Math.max(report.maxView, node.view);
    }
    const st = node.status();
    const where = `${st.view}${st.changing ? "?" : ""}`;
    if (where !== r.where) {
      r.where = where;
      trace(`${r.id} view ${where}`);
    }
  };

  const replyTo = (r: Replica, client: string, t: number, result: string) => {
    if (r.byzantine && does("silent")) return;
    let res = result;
    if (r.byzantine && does("false-replies")) {
      // All of the adversary's replicas tell the same lie.
      res = JSON.stringify({ value: `forged-${t}` });
    }
    if (!r.byzantine && !healed && rng() < dropP) return;
    at(between(1, 10), () => onReply(client, r.id, t, res));
  };

  // ---- the adversary ----------------------------------------------------
  const byzAuth = new Map(
    [...byz].map((id) => [id, fakeAuth(id, secret)]),
  );
  const remac = (m: PbftMessage, payload: PbftPayload): PbftMessage => ({
    from: m.from,
    to: m.to,
    payload,
    mac: byzAuth.get(m.from)!.mac(m.to, macInput(m.from, m.to, payload)),
  });
  const resign = <T extends { sig: string }>(from: string, p: T): T => ({
    ...p,
    sig: byzAuth.get(from)!.sign(signInput({ ...p, sig: "" })),
  });
  const honestIds = ids.filter((id) => !byz.has(id));
  const half = new Set(honestIds.filter(() => rng() < 0.5));

  const adversarySend = (r: Replica, m: PbftMessage) => {
    if (does("silent") || (does("silent-later") && now >= r.silentFrom)) {
      return;
    }
    r.sent.length < 100 && r.sent.push(m);
    let out = m;
    const p = m.payload;
    if (does("equivocate")) {
      if (p.type === "pre-prepare" && half.has(m.to)) {
        // Another batch for the same (view, seq) to half of the replicas.
        const batch = p.batch.length > 1
          ? p.batch.slice(1)
          : [evilRequest(m.from, Math.floor(rng() * 1e6), "x")];
        const digest = batchDigest(byzAuth.get(m.from)!, batch);
        out = remac(m, { ...p, batch, digest } satisfies PrePrepare);
      } else if (
        (p.type === "prepare" || p.type === "commit") && rng() < 0.3
      ) {
        out = remac(m, { ...p, digest: hash64(`junk${rng()}`) });
      } else if (p.type === "new-view" && p.viewChanges.length > 2 * f + 1) {
        // A different (still valid) subset of view changes to each replica.
        const vcs = p.viewChanges.filter((_, i) => i === 0 || rng() < 0.7);
        if (vcs.length >= 2 * f + 1) {
          out = remac(m, resign<NewView>(m.from, { ...p, viewChanges: vcs }));
        }
      }
    }
    if (does("invent-request") && rng() < 0.5) {
      if (out.payload.type === "pre-prepare") {
        const batch = inventRequest(out.payload.batch);
        const digest = batchDigest(byzAuth.get(m.from)!, batch);
        out = remac(m, { ...out.payload, batch, digest });
      } else if (out.payload.type === "request") {
        out = remac(m, {
          ...out.payload,
          requests: inventRequest(out.payload.requests),
        });
      }
    }
    if (does("conflicting-view-change") && p.type === "view-change") {
      out = remac(m, conflictingViewChange(m.from, p));
    }
    if (does("lie-state") && p.type === "state") {
      out = remac(m, { ...p, data: p.data.replace(/"/, "'") + " " });
    }
    if (does("lie-state") && p.type === "fetch-state" && rng() < 0.5) {
      // Unasked-for state with a forged proof.
      out = remac(m, {
        type: "state",
        stable: { seq: p.seq + K, digest: hash64("lie"), proof: [] },
        data: "{}",
      });
    }
    const delay = does("delay") && slowVictims.has(m.to) ? between(50, 400) : 0;
    transmit(out, delay);
    if (does("forge") && rng() < 0.1) forge(r, m);
    if (does("replay") && rng() < 0.1) replay(r);
  };

  /** A request the adversary's node signs as a client of its own: valid, and no sim client made it. */
  const evilRequest = (from: string, t: number, key: string): PbftRequest =>
    signRequest(byzAuth.get(from)!, {
      client: `${from}/evil`,
      t,
      op: JSON.stringify({ op: "write", key, value: "evil" }),
    });

  /**
   * A request the adversary cannot sign: an honest client's with its op
   * altered (the signature kept), or one in a client's name with a made-up
   * signature.
   */
  const inventRequest = (batch: PbftRequest[]): PbftRequest[] => {
    const i = Math.floor(rng() * batch.length);
    const victim = batch[i];
    if (victim && !byz.has(requestSigner(victim.client)) && rng() < 0.5) {
      const out = [...batch];
      out[i] = {
        ...victim,
        op: JSON.stringify({ op: "write", key: "x", value: "invented" }),
      };
      return out;
    }
    const client = pick(clientIds);
    return [...batch, {
      client,
      t: 1e6 + Math.floor(rng() * 1e6),
      op: JSON.stringify({ op: "write", key: "y", value: "invented" }),
      sig: hash64(`guess${rng()}`),
    }];
  };

  /** Batches the adversary claimed in view changes, by digest. */
  const madeUp = new Map<string, PbftRequest[]>();

  /**
   * A Byzantine replica asked for a batch: the one it made up, if any;
   * with "lie-state", sometimes one that does not match the digest.
   */
  const answerFetch = (r: Replica, m: PbftMessage) => {
    const p = m.payload;
    if (p.type !== "fetch-batch" || does("silent")) return;
    let batch = madeUp.get(p.digest);
    if (does("lie-state") && rng() < 0.5) {
      batch = [evilRequest(r.id, 1e6 + Math.floor(rng() * 1e6), "x")];
    }
    if (!batch) return;
    transmit(remac({ from: r.id, to: m.from, payload: p, mac: "" }, {
      type: "batch",
      seq: p.seq,
      digest: p.digest,
      batch,
    }));
  };

  const conflictingViewChange = (from: string, vc: ViewChange): ViewChange => {
    const variant = rng();
    if (variant < 0.25) return vc;
    if (variant < 0.5) {
      return resign(from, { ...vc, prepared: [], prePrepared: [] });
    }
    // Claim prepared and pre-prepared batches nobody else has, up to the view before.
    const prepared = [...vc.prepared];
    const prePrepared = [...vc.prePrepared];
    const lo = vc.stable.seq;
    for (let s = lo + 1; s <= lo + L && prepared.length < L; s++) {
      if (prepared.some((e) => e.seq === s) || rng() < 0.5) continue;
      const batch = [evilRequest(from, s, "y")];
      const digest = batchDigest(byzAuth.get(from)!, batch);
      const view = Math.max(0, vc.view - 1 - Math.floor(rng() * 2));
      prepared.push({ seq: s, view, digest });
      prePrepared.push({ seq: s, view, digest });
      // It hands the batch to whoever asks (a new view that chose it).
      madeUp.set(digest, batch);
    }
    return resign(from, { ...vc, prepared, prePrepared });
  };

  const forge = (r: Replica, m: PbftMessage) => {
    const victim = pick(honestIds);
    const claimed = pick(ids.filter((x) => x !== victim));
    const kind = rng();
    let payload: PbftPayload = m.payload;
    if (kind < 0.3 && payload.type === "view-change") {
      payload = { ...payload, replica: claimed };
    } else if (kind < 0.6) {
      payload = {
        type: "checkpoint",
        seq: K,
        digest: hash64("x"),
        replica: claimed,
        sig: "forged",
      };
    }
    // A MAC it cannot compute: the link's key is not its own.
    transmit({
      from: claimed,
      to: victim,
      payload,
      mac: hash64(`guess${rng()}`),
    });
    // Its own signature on a lie about someone else's checkpoint.
    transmit(remac(
      { ...m, to: victim },
      resign<Checkpoint>(r.id, {
        type: "checkpoint",
        seq: K,
        digest: hash64("x"),
        replica: claimed,
        sig: "",
      }),
    ));
  };

  const replay = (r: Replica) => {
    if (r.sent.length > 0 && rng() < 0.5) {
      transmit(pick(r.sent)); // its own old message: a valid MAC
    } else if (r.seen.length > 0) {
      const m = pick(r.seen); // someone else's, to another replica
      transmit({ ...m, to: pick(honestIds) });
    }
  };

  // ---- replicas -------------------------------------------------------
  const boot = (r: Replica) => {
    r.incarnation++;
    r.node = createPbft({
      id: r.id,
      replicas: ids,
      auth: fakeAuth(r.id, secret),
      checkpointInterval: K,
      window: L,
      maxBatch: pick([1, 4, 16]),
      maxInflight: pick([1, 2, 4]),
      viewChangeTicks: 20,
      retransmitTicks: 5,
      storage: r.records.length > 0 ? r.records : undefined,
      unsafePrepareQuorum: options.unsafePrepareQuorum,
      unsafeNewestClaim: options.unsafeNewestClaim,
      unsafeTrustRequests: options.unsafeTrustRequests,
    });
    r.app = new KvApp();
    r.down = false;
    trace(`${r.id} boots (incarnation ${r.incarnation})`);
    drain(r);
    const inc = r.incarnation;
    const tick = () => {
      if (r.down || r.incarnation !== inc) return;
      const before = r.node!.view;
      r.node!.tick();
      if (!r.byzantine && r.node!.view > before) report.viewChanges++;
      drain(r);
      at(r.tickMs, tick);
    };
    at(r.tickMs * rng(), tick);
  };

  for (const id of ids) {
    const r: Replica = {
      id,
      byzantine: byz.has(id),
      records: [],
      app: new KvApp(),
      down: false,
      incarnation: 0,
      tickMs: between(9, 11),
      seen: [],
      sent: [],
      silentFrom: between(200, chaosMs),
    };
    replicas.set(id, r);
    boot(r);
  }

  // ---- clients ----------------------------------------------------------
  const clientTimeout = 300;
  const submit = (c: Client) => {
    if (stopClients) return;
    const key = rng() < 0.5 ? "x" : "y";
    const roll = rng();
    const value = `${c.id}.${c.t + 1}`;
    let input: KvInput;
    let op: unknown;
    if (roll < 0.35) {
      input = { op: "read", key };
      op = { op: "read", key };
    } else if (roll < 0.75) {
      input = { op: "write", key, value };
      op = { op: "write", key, value };
    } else {
      const expected = rng() < 0.5
        ? null
        : `c${Math.floor(rng() * 3)}.${1 + Math.floor(rng() * c.t + 1)}`;
      input = { op: "cas", key, expected, value };
      op = { op: "cas", key, expected, value };
    }
    c.t++;
    const req = signRequest(fakeAuth(c.id, secret), {
      client: c.id,
      t: c.t,
      op: JSON.stringify(op),
    });
    submitted.add(`${req.client}\u0000${req.t}\u0000${req.op}`);
    c.op = {
      req,
      input,
      recId: rec.call(Number(c.id.slice(1)), input, now),
      sentAt: now,
      replies: new Map(),
    };
    trace(`${c.id} submits ${c.t}`);
    send(c, req, [pick(ids)]);
    const t = c.t;
    const retry = () => {
      if (!c.op || c.op.req.t !== t || stopClients) return;
      send(c, req, ids);
      at(clientTimeout, retry);
    };
    at(clientTimeout, retry);
  };
  const send = (c: Client, req: PbftRequest, to: string[]) => {
    for (const id of to) {
      if (!healed && rng() < dropP) continue;
      at(between(1, 10), () => {
        const r = replicas.get(id)!;
        if (r.down || !r.node) return;
        const last = r.app.last[c.id];
        if (last && last.t === req.t) {
          replyTo(r, c.id, req.t, last.result);
          return;
        }
        r.node.request(req);
        drain(r);
      });
    }
  };
  const onReply = (
    clientId: string,
    from: string,
    t: number,
    result: string,
  ) => {
    const c = clients.find((x) => x.id === clientId);
    if (!c?.op || c.op.req.t !== t) return;
    c.op.replies.set(from, result);
    let matching = 0;
    for (const v of c.op.replies.values()) if (v === result) matching++;
    if (matching < (options.unsafeClientQuorum ?? f + 1)) return;
    const key = `${clientId}:${t}`;
    const truth = results.get(key);
    if (truth === undefined) {
      violate(
        `client ${clientId} accepted ${result} for t=${t}, which no honest replica computed`,
      );
    } else if (truth !== result) {
      violate(
        `client ${clientId} accepted ${result} for t=${t}; honest replicas computed ${truth}`,
      );
    }
    const out = JSON.parse(result) as KvOutput;
    rec.ret(c.op.recId, out, now);
    report.accepted++;
    if (healed && c.op.sentAt >= healedAt && report.recoveryMs === undefined) {
      report.recoveryMs = now - healedAt;
    }
    trace(`${clientId} accepts ${t}`);
    c.op = undefined;
    at(between(1, 20), () => submit(c));
  };
  let stopClients = false;
  for (const id of clientIds) {
    const c: Client = { id, t: 0 };
    clients.push(c);
    at(between(5, 30), () => submit(c));
  }

  // ---- faults for honest replicas --------------------------------------
  const fault = () => {
    if (healed) return;
    const victim = pick(honestIds);
    const r = replicas.get(victim)!;
    const roll = rng();
    if (roll < 0.35 && !r.down) {
      report.crashes++;
      r.down = true;
      trace(`${victim} crashes`);
      at(between(50, 400), () => {
        if (r.down) boot(r);
      });
    } else if (roll < 0.7) {
      const links = ids.filter((x) => x !== victim).flatMap((x) => [
        `${victim}>${x}`,
        `${x}>${victim}`,
      ]);
      for (const l of links) cut.add(l);
      trace(`${victim} partitioned`);
      at(between(50, 500), () => {
        for (const l of links) cut.delete(l);
      });
    }
    at(between(100, 300), fault);
  };
  if (faults) at(between(100, 300), fault);

  // ---- run -----------------------------------------------------------------
  let healedAt = Infinity;
  const end = options.liveness ? chaosMs + boundMs : chaosMs;
  if (options.liveness) {
    at(chaosMs, () => {
      healed = true;
      healedAt = now;
      cut.clear();
      trace("heal");
      for (const r of replicas.values()) if (r.down) boot(r);
    });
  }
  while (events.nextAt() <= end) {
    const ev = events.pop()!;
    now = ev.at;
    ev.fn();
    if (report.violations.length > 0 && !options.keepTrace) break;
    if (options.liveness && report.recoveryMs !== undefined) break;
  }
  stopClients = true;
  if (options.liveness && report.recoveryMs === undefined) {
    report.recoveryMs = -1;
    violate(
      `liveness: no new request accepted within ${boundMs} ms of healing`,
    );
  }
  for (const r of replicas.values()) {
    if (!r.byzantine && r.node) report.rejected += r.node.rejected;
    if (r.node) {
      report.final.push({ ...r.node.status(), byzantine: r.byzantine });
    }
  }
  report.history = rec.history();
  report.linearizable = check(kvModel(), report.history, { timeoutMs: 5000 });
  if (report.linearizable === "illegal") {
    violate("the clients' history is not linearizable");
  }
  report.traceHash = hash.toString(16).padStart(8, "0");
  return report;
}
