/**
 * The deterministic Raft state machine, in the style of etcd-io/raft: inputs
 * are messages ({@linkcode RaftNode.step}) and ticks
 * ({@linkcode RaftNode.tick}); outputs come out as a {@linkcode Ready} batch
 * of state to persist, messages to send after that, entries to apply and
 * reads to serve. No clock, timer, randomness or I/O inside.
 *
 * @module
 */
import { RaftLog } from "./log.ts";
import { Progress } from "./progress.ts";
import { ReadOnly } from "./read_only.ts";
import type {
  ConfChange,
  ConfChangeData,
  Entry,
  HardState,
  Message,
  PersistedState,
  ReadState,
  Ready,
  Role,
  Snapshot,
} from "./types.ts";

/** Options for {@linkcode createRaft}. */
export interface RaftOptions {
  /** This node's id (any non-empty string). */
  id: string;
  /**
   * Voters when the log and snapshot say nothing yet (bootstrap). A node
   * joining an existing cluster passes `[]` and learns the configuration
   * from the leader's log or snapshot.
   * @default {[]}
   */
  peers?: string[];
  /** Ticks without a leader before campaigning; the real timeout is random in [electionTick, 2·electionTick). @default {10} */
  electionTick?: number;
  /** Ticks between a leader's heartbeats. @default {1} */
  heartbeatTick?: number;
  /** Uniform floats in [0, 1); inject a seeded PRNG for determinism. @default {Math.random} */
  random?: () => number;
  /** Ask for pre-votes before bumping the term (Raft thesis §9.6). @default {true} */
  preVote?: boolean;
  /** A leader steps down after an election timeout without hearing from a quorum; followers ignore votes while they hear from a leader. @default {true} */
  checkQuorum?: boolean;
  /** Approximate byte budget of the entries in one append. @default {1048576} */
  maxSizePerMsg?: number;
  /** Appends in flight per follower while replicating. @default {256} */
  maxInflight?: number;
  /** What the driver persisted before a restart. */
  storage?: PersistedState;
  /** Last index the state machine has applied (on restart). @default {the snapshot's index} */
  applied?: number;
}

/** What a node tells about itself, for tests and dashboards. */
export interface RaftStatus {
  id: string;
  role: Role;
  term: number;
  vote: string;
  lead: string;
  commit: number;
  applied: number;
  lastIndex: number;
  voters: string[];
}

/**
 * One Raft peer as a pure state machine.
 *
 * @example Usage
 * ```ts
 * import { createRaft } from "./core.ts";
 * const node = createRaft({ id: "1", peers: ["1"], random: () => 0 });
 * node.campaign();
 * node.role; // "leader"
 * node.propose("hello");
 * const rd = node.ready();
 * rd.committed.map((e) => e.data); // ["", "hello"]
 * node.advance(rd);
 * ```
 */
export class RaftNode {
  readonly id: string;
  term = 0;
  vote = "";
  lead = "";
  role: Role = "follower";
  /** The node a leader transfer is handing over to, or "". */
  leadTransferee = "";
  readonly log = new RaftLog();

  readonly electionTick: number;
  readonly heartbeatTick: number;
  readonly preVote: boolean;
  readonly checkQuorum: boolean;
  readonly #random: () => number;
  readonly #maxSize: number;
  readonly #maxInflight: number;

  #baseVoters: string[];
  #confs: { index: number; voters: string[] }[] = [];
  #snapshot?: Snapshot;
  #prs = new Map<string, Progress>();
  #votes = new Map<string, boolean>();
  #msgs: Message[] = [];
  #readStates: ReadState[] = [];
  #readOnly = new ReadOnly();
  #pendingReads: Message[] = [];
  #electionElapsed = 0;
  #heartbeatElapsed = 0;
  #randomizedTimeout = 0;
  #prevHard: HardState;

  /** Builds a node; prefer {@linkcode createRaft}. */
  constructor(options: RaftOptions) {
    if (!options.id) {
      throw new TypeError(`Cannot create a Raft node: id is '${options.id}'`);
    }
    this.id = options.id;
    this.electionTick = options.electionTick ?? 10;
    this.heartbeatTick = options.heartbeatTick ?? 1;
    if (this.heartbeatTick >= this.electionTick) {
      throw new RangeError(
        `heartbeatTick must be below electionTick: got ${this.heartbeatTick} >= ${this.electionTick}`,
      );
    }
    this.#random = options.random ?? Math.random;
    this.preVote = options.preVote ?? true;
    this.checkQuorum = options.checkQuorum ?? true;
    this.#maxSize = options.maxSizePerMsg ?? 1 << 20;
    this.#maxInflight = options.maxInflight ?? 256;
    this.#baseVoters = [...(options.peers ?? [])];
    const st = options.storage;
    if (st?.snapshot) {
      this.#snapshot = st.snapshot;
      this.#baseVoters = [...st.snapshot.voters];
      this.log.snapIndex = st.snapshot.index;
      this.log.snapTerm = st.snapshot.term;
    }
    if (st) {
      this.log.entries = st.entries.filter((e) => e.index > this.log.snapIndex);
      this.log.stabled = this.log.lastIndex();
      this.log.committed = Math.max(st.hardState.commit, this.log.snapIndex);
      this.log.applied = options.applied ?? this.log.snapIndex;
      this.term = st.hardState.term;
      this.vote = st.hardState.vote;
      this.#syncConf(this.log.firstIndex());
    }
    this.#prevHard = this.#hardState();
    this.#resetTimers();
  }

  // ---- public API ----------------------------------------------------

  /** The voters of the latest configuration in the log (in effect as soon as appended). */
  voters(): string[] {
    return this.#confs.at(-1)?.voters ?? this.#baseVoters;
  }

  /** The voters in force at `index`. */
  votersAt(index: number): string[] {
    for (let k = this.#confs.length - 1; k >= 0; k--) {
      if (this.#confs[k].index <= index) return this.#confs[k].voters;
    }
    return this.#baseVoters;
  }

  /** Index of the latest configuration entry in the log (0: none since the bootstrap voters or snapshot). */
  confIndex(): number {
    return this.#confs.at(-1)?.index ?? 0;
  }

  /** True when this node is a voter and may campaign. */
  promotable(): boolean {
    return this.voters().includes(this.id);
  }

  /** A summary of the node's state. */
  status(): RaftStatus {
    return {
      id: this.id,
      role: this.role,
      term: this.term,
      vote: this.vote,
      lead: this.lead,
      commit: this.log.committed,
      applied: this.log.applied,
      lastIndex: this.log.lastIndex(),
      voters: [...this.voters()],
    };
  }

  /** The leader's progress for `id` (undefined on followers). */
  progress(id: string): Progress | undefined {
    return this.role === "leader" ? this.#prs.get(id) : undefined;
  }

  /** Advances the logical clock by one tick. */
  tick(): void {
    if (this.role === "leader") this.#tickHeartbeat();
    else this.#tickElection();
  }

  /** Starts an election now (a pre-vote first when enabled). */
  campaign(): void {
    this.#hup(false);
  }

  /**
   * Proposes `data` to be appended; a follower forwards it to its leader.
   * Returns false when it was dropped (no leader known, a transfer under way,
   * or this leader is being removed): the caller should retry.
   */
  propose(data: string): boolean {
    return this.#stepProp({
      type: "prop",
      from: this.id,
      to: this.id,
      term: 0,
      entries: [{ term: 0, index: 0, type: "normal", data }],
    });
  }

  /**
   * Proposes adding or removing one voter. The leader refuses (returns false
   * on the leader, drops silently when forwarded) while an earlier change is
   * uncommitted or before it has committed an entry of its own term.
   */
  proposeConfChange(cc: ConfChange): boolean {
    return this.#stepProp({
      type: "prop",
      from: this.id,
      to: this.id,
      term: 0,
      entries: [{
        term: 0,
        index: 0,
        type: "conf",
        data: JSON.stringify({ type: cc.type, node: cc.node }),
      }],
    });
  }

  /**
   * Asks for a linearizable read. When a quorum confirms leadership, a
   * {@linkcode ReadState} with this `context` comes out in a Ready; serve the
   * read once that index is applied. Never answered before the leader's
   * no-op has committed. Returns false when no leader is known.
   */
  readIndex(context: string): boolean {
    return this.#stepReadIndex({
      type: "readIndex",
      from: this.id,
      to: this.id,
      term: 0,
      context,
    });
  }

  /** Asks the leader to hand leadership to `to` (forwarded by followers). */
  transferLeader(to: string): void {
    const m: Message = {
      type: "transferLeader",
      from: this.id,
      to: this.id,
      term: 0,
      transferee: to,
    };
    if (this.role === "leader") this.#leaderTransfer(m);
    else if (this.lead) this.#send({ ...m, to: this.lead });
  }

  /**
   * The driver could not reach `id`: a leader stops pipelining to it and
   * probes again (etcd's ReportUnreachable).
   */
  reportUnreachable(id: string): void {
    const pr = this.progress(id);
    if (pr?.state === "replicate") pr.becomeProbe();
  }

  /**
   * The driver finished (or failed) sending a snapshot to `id`; either way
   * the leader probes from there instead of waiting for the next heartbeat.
   */
  reportSnapshot(id: string, failed: boolean): void {
    const pr = this.progress(id);
    if (pr?.state !== "snapshot") return;
    if (failed) pr.pendingSnapshot = 0;
    pr.becomeProbe();
    pr.probeSent = true;
  }

  /** Feeds one message from the network. */
  step(m: Message): void {
    if (m.term === 0) {
      switch (m.type) {
        case "prop":
          this.#stepProp(m);
          return;
        case "readIndex":
          this.#stepReadIndex(m);
          return;
        case "transferLeader":
          if (this.role === "leader") this.#leaderTransfer(m);
          else if (this.lead) this.#send({ ...m, to: this.lead });
          return;
        default:
          return;
      }
    }
    if (m.term > this.term) {
      if (m.type === "vote" || m.type === "preVote") {
        const inLease = this.checkQuorum && this.lead !== "" &&
          this.#electionElapsed < this.electionTick;
        if (inLease && m.context !== "transfer") return;
      }
      if (m.type === "preVote") {
        // A pre-vote never changes our term.
      } else if (m.type === "preVoteResp" && !m.reject) {
        // A granted pre-vote is for a term we will only take if we win.
      } else {
        const lead =
          m.type === "app" || m.type === "heartbeat" || m.type === "snap"
            ? m.from
            : "";
        this.#becomeFollower(m.term, lead);
      }
    } else if (m.term < this.term) {
      if (
        (this.checkQuorum || this.preVote) &&
        (m.type === "heartbeat" || m.type === "app")
      ) {
        // Tell a stale leader (maybe cut off by a one-way partition) our term.
        this.#send({ type: "appResp", to: m.from, term: this.term, index: 0 });
      } else if (m.type === "preVote") {
        this.#send({
          type: "preVoteResp",
          to: m.from,
          term: this.term,
          reject: true,
        });
      }
      return;
    }

    if (m.type === "vote" || m.type === "preVote") {
      const canVote = this.vote === m.from ||
        (this.vote === "" && this.lead === "") ||
        (m.type === "preVote" && m.term > this.term);
      const grant = canVote && this.log.isUpToDate(m.index!, m.logTerm!);
      const respType = m.type === "vote" ? "voteResp" : "preVoteResp";
      if (grant) {
        this.#send({ type: respType, to: m.from, term: m.term });
        if (m.type === "vote") {
          this.#electionElapsed = 0;
          this.vote = m.from;
        }
      } else {
        this.#send({
          type: respType,
          to: m.from,
          term: this.term,
          reject: true,
        });
      }
      return;
    }

    switch (this.role) {
      case "leader":
        this.#stepLeader(m);
        break;
      case "candidate":
      case "preCandidate":
        this.#stepCandidate(m);
        break;
      default:
        this.#stepFollower(m);
    }
  }

  /** True when {@linkcode ready} has something for the driver. */
  hasReady(): boolean {
    const hs = this.#hardState();
    return !sameHard(hs, this.#prevHard) ||
      this.log.unstableSnapshot !== undefined ||
      this.log.stabled < this.log.lastIndex() ||
      this.#msgs.length > 0 ||
      this.#readStates.length > 0 ||
      this.log.committed > Math.max(this.log.applied, this.log.snapIndex);
  }

  /**
   * Takes the next batch of work. Messages and read states are handed out
   * once; entries and committed entries until {@linkcode advance} confirms.
   */
  ready(): Ready {
    const hs = this.#hardState();
    const rd: Ready = {
      entries: this.log.unstableEntries(),
      messages: this.#msgs,
      committed: this.log.nextCommitted(),
      readStates: this.#readStates,
    };
    if (!sameHard(hs, this.#prevHard)) rd.hardState = hs;
    if (this.log.unstableSnapshot) rd.snapshot = this.log.unstableSnapshot;
    this.#msgs = [];
    this.#readStates = [];
    return rd;
  }

  /** The driver has persisted, sent and applied `rd`. */
  advance(rd: Ready): void {
    if (rd.hardState) this.#prevHard = rd.hardState;
    if (rd.snapshot) {
      if (this.log.unstableSnapshot?.index === rd.snapshot.index) {
        this.log.unstableSnapshot = undefined;
      }
      this.log.applied = Math.max(this.log.applied, rd.snapshot.index);
      this.log.stabled = Math.max(this.log.stabled, rd.snapshot.index);
    }
    const last = rd.entries.at(-1);
    if (last && this.log.matchTerm(last.index, last.term)) {
      this.log.stabled = Math.max(this.log.stabled, last.index);
    }
    const applied = rd.committed.at(-1);
    if (applied) this.log.applied = Math.max(this.log.applied, applied.index);
  }

  /**
   * Folds the log up to `index` (already applied) into a snapshot holding
   * `data`, and returns it for the driver to persist in place of those
   * entries.
   */
  compact(index: number, data: string): Snapshot {
    const term = this.log.term(index);
    if (term === undefined || index > this.log.applied) {
      throw new RangeError(
        `Cannot snapshot at ${index}: applied ${this.log.applied}, log holds ${this.log.snapIndex}..${this.log.lastIndex()}`,
      );
    }
    const snap: Snapshot = {
      index,
      term,
      voters: [...this.votersAt(index)],
      data,
    };
    this.#baseVoters = snap.voters;
    this.#confs = this.#confs.filter((c) => c.index > index);
    this.log.compact(index);
    this.#snapshot = snap;
    return snap;
  }

  /** The latest snapshot this node holds, if any. */
  snapshot(): Snapshot | undefined {
    return this.#snapshot;
  }

  // ---- roles ---------------------------------------------------------

  #hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  #resetTimers(): void {
    this.#electionElapsed = 0;
    this.#heartbeatElapsed = 0;
    this.#randomizedTimeout = this.electionTick +
      Math.floor(this.#random() * this.electionTick);
  }

  #reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = "";
    }
    this.lead = "";
    this.#resetTimers();
    this.leadTransferee = "";
    this.#votes.clear();
    this.#prs.clear();
    for (const v of this.#progressIds()) this.#addProgress(v);
    this.#readOnly.reset();
    this.#pendingReads = [];
  }

  #progressIds(): string[] {
    const ids = new Set(this.voters());
    ids.add(this.id);
    return [...ids];
  }

  #addProgress(id: string): void {
    const pr = new Progress(this.log.lastIndex() + 1, this.#maxInflight);
    if (id === this.id) pr.match = this.log.lastIndex();
    this.#prs.set(id, pr);
  }

  #becomeFollower(term: number, lead: string): void {
    this.#reset(term);
    this.lead = lead;
    this.role = "follower";
  }

  #becomePreCandidate(): void {
    this.role = "preCandidate";
    this.#votes.clear();
    this.lead = "";
    this.#resetTimers();
  }

  #becomeCandidate(): void {
    this.#reset(this.term + 1);
    this.vote = this.id;
    this.role = "candidate";
  }

  #becomeLeader(): void {
    this.#reset(this.term);
    this.lead = this.id;
    this.role = "leader";
    this.#prs.get(this.id)!.becomeReplicate();
    // The no-op: commits every earlier entry once it commits (§5.4.2, §8).
    this.#appendEntries([{ term: 0, index: 0, type: "normal", data: "" }]);
  }

  #hup(transfer: boolean): void {
    if (this.role === "leader" || !this.promotable()) return;
    if (this.preVote && !transfer) this.#campaign("preVote");
    else this.#campaign("vote", transfer);
  }

  #campaign(kind: "preVote" | "vote", transfer = false): void {
    let term: number;
    if (kind === "preVote") {
      this.#becomePreCandidate();
      term = this.term + 1;
    } else {
      this.#becomeCandidate();
      term = this.term;
    }
    if (this.#poll(this.id, true) === "won") {
      if (kind === "preVote") this.#campaign("vote");
      else this.#becomeLeader();
      return;
    }
    for (const v of this.voters()) {
      if (v === this.id) continue;
      this.#send({
        type: kind,
        to: v,
        term,
        index: this.log.lastIndex(),
        logTerm: this.log.lastTerm(),
        context: transfer ? "transfer" : undefined,
      });
    }
  }

  #poll(id: string, granted: boolean): "won" | "lost" | "pending" {
    if (!this.#votes.has(id)) this.#votes.set(id, granted);
    const voters = this.voters();
    let yes = 0, no = 0;
    for (const v of voters) {
      const g = this.#votes.get(v);
      if (g === true) yes++;
      else if (g === false) no++;
    }
    const q = quorum(voters.length);
    if (yes >= q) return "won";
    if (voters.length - no < q) return "lost";
    return "pending";
  }

  // ---- ticks ---------------------------------------------------------

  #tickElection(): void {
    this.#electionElapsed++;
    if (
      this.promotable() && this.#electionElapsed >= this.#randomizedTimeout
    ) {
      this.#electionElapsed = 0;
      this.#hup(false);
    }
  }

  #tickHeartbeat(): void {
    this.#heartbeatElapsed++;
    this.#electionElapsed++;
    if (this.#electionElapsed >= this.electionTick) {
      this.#electionElapsed = 0;
      if (this.checkQuorum && !this.#quorumActive()) {
        this.#becomeFollower(this.term, "");
        return;
      }
      this.leadTransferee = "";
    }
    if (this.#heartbeatElapsed >= this.heartbeatTick) {
      this.#heartbeatElapsed = 0;
      this.#bcastHeartbeat(this.#readOnly.lastPending());
    }
  }

  #quorumActive(): boolean {
    const voters = this.voters();
    let active = 0;
    for (const v of voters) {
      const pr = this.#prs.get(v);
      if (v === this.id || pr?.recentActive) active++;
    }
    for (const [id, pr] of this.#prs) {
      if (id !== this.id) pr.recentActive = false;
    }
    return active >= quorum(voters.length);
  }

  // ---- per role ------------------------------------------------------

  #stepLeader(m: Message): void {
    const pr = this.#prs.get(m.from);
    switch (m.type) {
      case "appResp": {
        if (!pr) return;
        pr.recentActive = true;
        if (m.reject) {
          const hint = m.logTerm !== undefined && m.logTerm > 0
            ? this.log.findConflictByTerm(m.rejectHint!, m.logTerm)
            : m.rejectHint!;
          if (pr.maybeDecrTo(m.index!, hint)) {
            if (pr.state === "replicate") pr.becomeProbe();
            this.#sendAppend(m.from);
          }
          return;
        }
        const wasPaused = pr.isPaused();
        // An ack of exactly the match still answers a probe (etcd does the same).
        if (
          pr.maybeUpdate(m.index!) ||
          (pr.match === m.index && pr.state === "probe")
        ) {
          if (pr.state === "probe") pr.becomeReplicate();
          else if (
            pr.state === "snapshot" && pr.match >= pr.pendingSnapshot
          ) {
            pr.becomeProbe();
          } else if (pr.state === "replicate") pr.inflights.freeLE(m.index!);
          if (this.#maybeCommit()) {
            this.#bcastAppend();
            if (this.role !== "leader") return;
          } else if (wasPaused) this.#sendAppend(m.from);
          while (this.#sendAppend(m.from, false)) { /* pipeline */ }
          if (
            m.from === this.leadTransferee &&
            pr.match === this.log.lastIndex()
          ) {
            this.#send({ type: "timeoutNow", to: m.from, term: this.term });
          }
        }
        return;
      }
      case "heartbeatResp": {
        if (!pr) return;
        pr.recentActive = true;
        pr.probeSent = false;
        if (pr.state === "replicate" && pr.inflights.full()) {
          pr.inflights.freeFirst();
        }
        // A snapshot may have been lost; probe again.
        if (pr.state === "snapshot") pr.becomeProbe();
        if (pr.match < this.log.lastIndex()) this.#sendAppend(m.from);
        if (m.context) {
          const acks = this.#readOnly.recvAck(m.from, m.context);
          if (acks && this.#hasQuorum(acks)) {
            for (const r of this.#readOnly.advance(m.context)) {
              this.#answerRead(r.from, r.index, r.context);
            }
          }
        }
        return;
      }
      default:
        return;
    }
  }

  #stepCandidate(m: Message): void {
    switch (m.type) {
      case "app":
        this.#becomeFollower(m.term, m.from);
        this.#handleAppend(m);
        return;
      case "heartbeat":
        this.#becomeFollower(m.term, m.from);
        this.#handleHeartbeat(m);
        return;
      case "snap":
        this.#becomeFollower(m.term, m.from);
        this.#handleSnapshot(m);
        return;
      case "voteResp":
      case "preVoteResp": {
        const mine = this.role === "preCandidate" ? "preVoteResp" : "voteResp";
        if (m.type !== mine) return;
        const r = this.#poll(m.from, !m.reject);
        if (r === "won") {
          if (this.role === "preCandidate") this.#campaign("vote");
          else {
            this.#becomeLeader();
            this.#bcastAppend();
          }
        } else if (r === "lost") this.#becomeFollower(this.term, "");
        return;
      }
      default:
        return;
    }
  }

  #stepFollower(m: Message): void {
    switch (m.type) {
      case "app":
        this.#electionElapsed = 0;
        this.lead = m.from;
        this.#handleAppend(m);
        return;
      case "heartbeat":
        this.#electionElapsed = 0;
        this.lead = m.from;
        this.#handleHeartbeat(m);
        return;
      case "snap":
        this.#electionElapsed = 0;
        this.lead = m.from;
        this.#handleSnapshot(m);
        return;
      case "timeoutNow":
        this.#hup(true);
        return;
      case "readIndexResp":
        this.#readStates.push({ index: m.index!, context: m.context! });
        return;
      default:
        return;
    }
  }

  // ---- requests ------------------------------------------------------

  #stepProp(m: Message): boolean {
    if (this.role !== "leader") {
      if (!this.lead || m.from !== this.id) return false;
      this.#send({ ...m, to: this.lead });
      return true;
    }
    if (this.leadTransferee || !this.promotable()) return false;
    const ents: Entry[] = [];
    for (const e of m.entries ?? []) {
      if (e.type === "conf") {
        const data = this.#confData(e.data);
        if (!data) return false;
        ents.push({ ...e, data: JSON.stringify(data) });
      } else ents.push({ ...e });
    }
    if (ents.length === 0) return false;
    this.#appendEntries(ents);
    this.#bcastAppend();
    return true;
  }

  /** Checks a proposed change; undefined when it must be refused. */
  #confData(raw: string): ConfChangeData | undefined {
    let cc: ConfChange;
    try {
      cc = JSON.parse(raw);
    } catch {
      return undefined;
    }
    // One change at a time, and only after this leader committed an entry
    // of its own term (the published fix to single-server changes).
    const lastConf = this.#confs.at(-1)?.index ?? 0;
    if (lastConf > this.log.committed) return undefined;
    if (this.log.term(this.log.committed) !== this.term) return undefined;
    const voters = this.voters();
    if (cc.type === "add" && !voters.includes(cc.node) && cc.node) {
      return { ...cc, voters: [...voters, cc.node] };
    }
    if (cc.type === "remove" && voters.includes(cc.node) && voters.length > 1) {
      return { ...cc, voters: voters.filter((v) => v !== cc.node) };
    }
    return undefined;
  }

  #stepReadIndex(m: Message): boolean {
    if (this.role !== "leader") {
      if (!this.lead || m.from !== this.id) return false;
      this.#send({ ...m, to: this.lead });
      return true;
    }
    if (this.log.term(this.log.committed) !== this.term) {
      // Not until the no-op commits: only then is our commit index current.
      this.#pendingReads.push(m);
      return true;
    }
    const voters = this.voters();
    if (voters.length === 1 && voters[0] === this.id) {
      this.#answerRead(m.from, this.log.committed, m.context!);
      return true;
    }
    this.#readOnly.add(this.log.committed, m.from, m.context!);
    const acks = this.#readOnly.recvAck(this.id, m.context!);
    if (acks && this.#hasQuorum(acks)) {
      for (const r of this.#readOnly.advance(m.context!)) {
        this.#answerRead(r.from, r.index, r.context);
      }
      return true;
    }
    this.#bcastHeartbeat(m.context);
    return true;
  }

  #answerRead(from: string, index: number, context: string): void {
    if (from === this.id) this.#readStates.push({ index, context });
    else {
      this.#send({
        type: "readIndexResp",
        to: from,
        term: this.term,
        index,
        context,
      });
    }
  }

  #hasQuorum(acks: Set<string>): boolean {
    const voters = this.voters();
    return voters.filter((v) => acks.has(v)).length >= quorum(voters.length);
  }

  #leaderTransfer(m: Message): void {
    const to = m.transferee ?? "";
    if (!this.voters().includes(to) || to === this.id) return;
    if (this.leadTransferee === to) return;
    this.leadTransferee = to;
    this.#electionElapsed = 0;
    const pr = this.#prs.get(to)!;
    if (pr.match === this.log.lastIndex()) {
      this.#send({ type: "timeoutNow", to, term: this.term });
    } else this.#sendAppend(to);
  }

  // ---- replication ---------------------------------------------------

  #appendEntries(ents: Entry[]): void {
    let index = this.log.lastIndex();
    const stamped = ents.map((e) => ({
      ...e,
      term: this.term,
      index: ++index,
    }));
    this.log.append(stamped);
    this.#syncConf(stamped[0].index);
    this.#prs.get(this.id)!.maybeUpdate(this.log.lastIndex());
    this.#maybeCommit();
  }

  /** Rebuilds the configuration history from `from` on (after entries changed there). */
  #syncConf(from: number): void {
    const before = this.voters();
    this.#confs = this.#confs.filter((c) => c.index < from);
    for (
      let i = Math.max(from, this.log.firstIndex());
      i <= this.log.lastIndex();
      i++
    ) {
      const e = this.log.entry(i);
      if (e.type === "conf") {
        const data = JSON.parse(e.data) as ConfChangeData;
        this.#confs.push({ index: i, voters: data.voters });
      }
    }
    const after = this.voters();
    if (before === after || this.role !== "leader") return;
    for (const v of after) if (!this.#prs.has(v)) this.#addProgress(v);
    for (const id of [...this.#prs.keys()]) {
      if (id !== this.id && !after.includes(id)) this.#prs.delete(id);
    }
    if (this.leadTransferee && !after.includes(this.leadTransferee)) {
      this.leadTransferee = "";
    }
  }

  #maybeCommit(): boolean {
    const voters = this.voters();
    const matches = voters.map((v) => this.#prs.get(v)?.match ?? 0).sort((
      a,
      b,
    ) => b - a);
    const idx = matches[quorum(voters.length) - 1] ?? 0;
    if (!this.log.maybeCommit(idx, this.term)) return false;
    this.#afterCommit();
    return true;
  }

  #afterCommit(): void {
    if (this.log.term(this.log.committed) === this.term) {
      const waiting = this.#pendingReads;
      this.#pendingReads = [];
      for (const m of waiting) this.#stepReadIndex(m);
    }
    // Removed from the configuration and it is committed: step down.
    const lastConf = this.#confs.at(-1)?.index ?? 0;
    if (!this.promotable() && lastConf <= this.log.committed) {
      this.#bcastAppend();
      this.#becomeFollower(this.term, "");
    }
  }

  /** Sends an append (or a snapshot) to `to`; false when nothing was sent. */
  #sendAppend(to: string, sendIfEmpty = true): boolean {
    const pr = this.#prs.get(to);
    if (this.role !== "leader" || !pr || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.log.term(prevIndex);
    if (prevTerm === undefined) {
      const snap = this.#snapshot;
      if (!snap || prevIndex > this.log.lastIndex()) {
        pr.becomeProbe();
        return false;
      }
      this.#send({ type: "snap", to, term: this.term, snapshot: snap });
      pr.becomeSnapshot(snap.index);
      return true;
    }
    const ents = pr.next <= this.log.lastIndex()
      ? this.log.entriesFrom(pr.next, this.#maxSize)
      : [];
    if (ents.length === 0 && !sendIfEmpty) return false;
    this.#send({
      type: "app",
      to,
      term: this.term,
      index: prevIndex,
      logTerm: prevTerm,
      entries: ents,
      commit: this.log.committed,
    });
    pr.sent(ents.at(-1)?.index ?? 0);
    return true;
  }

  #bcastAppend(): void {
    if (this.role !== "leader") return;
    for (const id of this.#prs.keys()) if (id !== this.id) this.#sendAppend(id);
  }

  #bcastHeartbeat(context?: string): void {
    for (const [id, pr] of this.#prs) {
      if (id === this.id) continue;
      this.#send({
        type: "heartbeat",
        to: id,
        term: this.term,
        commit: Math.min(pr.match, this.log.committed),
        context,
      });
    }
  }

  #handleAppend(m: Message): void {
    if (m.index! < this.log.committed) {
      this.#send({
        type: "appResp",
        to: m.from,
        term: this.term,
        index: this.log.committed,
      });
      return;
    }
    const r = this.log.maybeAppend(
      m.index!,
      m.logTerm!,
      m.commit!,
      m.entries ?? [],
    );
    if (r) {
      if (r.from) this.#syncConf(r.from);
      this.#send({
        type: "appResp",
        to: m.from,
        term: this.term,
        index: r.lastNew,
      });
      return;
    }
    const hint = this.log.findConflictByTerm(m.index!, m.logTerm!);
    this.#send({
      type: "appResp",
      to: m.from,
      term: this.term,
      index: m.index,
      reject: true,
      rejectHint: hint,
      logTerm: this.log.term(hint) ?? 0,
    });
  }

  #handleHeartbeat(m: Message): void {
    this.log.commitTo(Math.min(m.commit!, this.log.lastIndex()));
    this.#send({
      type: "heartbeatResp",
      to: m.from,
      term: this.term,
      context: m.context,
    });
  }

  #handleSnapshot(m: Message): void {
    const s = m.snapshot!;
    if (s.index <= this.log.committed) {
      this.#send({
        type: "appResp",
        to: m.from,
        term: this.term,
        index: this.log.committed,
      });
      return;
    }
    if (this.log.matchTerm(s.index, s.term)) {
      // Figure 13 rule 6: we hold that entry; keep what follows.
      this.log.commitTo(s.index);
    } else {
      // Rules 7–8: discard the entire log, reset to the snapshot.
      this.log.restore(s);
      this.#snapshot = s;
      this.#baseVoters = [...s.voters];
      this.#confs = [];
    }
    this.#send({
      type: "appResp",
      to: m.from,
      term: this.term,
      index: this.log.lastIndex(),
    });
  }

  #send(m: Omit<Message, "from">): void {
    const msg = { ...m, from: this.id } as Message;
    if (msg.context === undefined) delete msg.context;
    this.#msgs.push(msg);
  }
}

function quorum(n: number): number {
  return Math.floor(n / 2) + 1;
}

function sameHard(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

/**
 * Creates a Raft node from options (see {@linkcode RaftOptions}).
 *
 * @example Usage
 * ```ts
 * import { createRaft } from "./core.ts";
 * const node = createRaft({ id: "a", peers: ["a", "b", "c"], random: () => 0.5 });
 * for (let i = 0; i < 15; i++) node.tick();
 * node.role; // "preCandidate"
 * node.ready().messages.map((m) => m.type); // ["preVote", "preVote"]
 * ```
 */
export function createRaft(options: RaftOptions): RaftNode {
  return new RaftNode(options);
}
