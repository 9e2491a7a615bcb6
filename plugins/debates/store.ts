/**
 * Debates in the plugin's KV keyspace: the debate record, one entry per
 * turn and per round, and a status index for listing. Turns and rounds are
 * written once (check on an absent key): a saga step re-run after a crash
 * or on another node finds the first write and does not record twice.
 *
 * ```
 * ["debate", id]                       the debate (DebateRecord)
 * ["turn", id, round, participant]     one participant's turn (Turn)
 * ["round", id, round]                 the round's tally and consensus (RoundRecord)
 * ["moderation", id, round]            the moderator's summary of the round (Moderation)
 * ["by-status", status, createdAt, id] index for GET /api/v1/debates?status=
 * ["by-time", createdAt, id]           index for GET /api/v1/debates
 * ```
 *
 * @module
 */
import type { ConsensusRule, RoundTally } from "./tally.ts";

/** Where a debate is. */
export type DebateStatus =
  | "running"
  | "consensus"
  | "no-consensus"
  | "failed"
  | "cancelled";

/** Statuses a debate does not leave. */
export const FINISHED_STATUSES: ReadonlySet<DebateStatus> = new Set([
  "consensus",
  "no-consensus",
  "failed",
  "cancelled",
]);

/** A participant slot: an agent by id, or any agent offering a capability. */
export interface Participant {
  /** What the client named. */
  ref: string;
  kind: "agent" | "capability";
}

/** A debate as stored. */
export interface DebateRecord {
  id: string;
  topic: string;
  participants: Participant[];
  moderator?: Participant;
  rounds: number;
  turnTimeoutMs: number;
  consensus: ConsensusRule;
  status: DebateStatus;
  /** The saga that runs it. */
  saga: string;
  /** Who started it (the API principal). */
  by?: string;
  createdAt: number;
  updatedAt: number;
  finishedAt?: number;
  /** Rounds completed (tallied). */
  roundsRun: number;
  /** The position agreed on and the round it was reached in. */
  result?: { position: string; round: number; share: number };
  /** Why it failed. */
  error?: string;
}

/** One participant's turn in one round. */
export interface Turn {
  round: number;
  /** Index in the debate's participants. */
  participant: number;
  ref: string;
  /** The agent asked (none when no agent could be found). */
  agent?: string;
  status: "answered" | "silent";
  position?: string;
  argument?: string;
  confidence?: number;
  /** Why the participant is silent: timeout, unavailable, bad answer. */
  reason?: string;
  startedAt: number;
  latencyMs: number;
  /** The node that asked. */
  node: string;
}

/** The moderator's part in a round. */
export interface Moderation {
  round: number;
  agent?: string;
  summary?: string;
  /** Why there is no summary. */
  error?: string;
  startedAt: number;
  latencyMs: number;
}

/** A round's outcome. */
export interface RoundRecord {
  round: number;
  tally: RoundTally;
  /** The moderator's summary of the round. */
  summary?: string;
  /** Why the moderator has no summary. */
  moderatorError?: string;
  completedAt: number;
}

/** A debate with its turns and rounds (`GET /api/v1/debates/{id}`). */
export interface DebateView extends DebateRecord {
  turns: Turn[];
  roundResults: RoundRecord[];
}

/** The store. */
export interface DebateStore {
  create(d: DebateRecord): Promise<void>;
  get(id: string): Promise<DebateRecord | null>;
  /** The debate with its turns and rounds. */
  view(id: string): Promise<DebateView | null>;
  /** The recorded turn, if any. */
  turn(id: string, round: number, participant: number): Promise<Turn | null>;
  /** Turns of rounds `from`..`to` (inclusive), in round then participant order. */
  turns(id: string, from?: number, to?: number): Promise<Turn[]>;
  /** Records a turn unless one is; resolves with the turn kept and whether it is this one. */
  recordTurn(id: string, t: Turn): Promise<{ turn: Turn; written: boolean }>;
  round(id: string, round: number): Promise<RoundRecord | null>;
  /** The recorded outcomes of rounds `from`..`to`, in order. */
  rounds(id: string, from?: number, to?: number): Promise<RoundRecord[]>;
  moderation(id: string, round: number): Promise<Moderation | null>;
  /** Records the moderator's part unless it is; resolves with the one kept. */
  recordModeration(id: string, m: Moderation): Promise<Moderation>;
  /**
   * Records a round's outcome and changes the debate (rounds run, status,
   * result) in one commit, unless the round is recorded already.
   */
  recordRound(
    id: string,
    r: RoundRecord,
    change: (d: DebateRecord) => DebateRecord | null,
  ): Promise<{ debate: DebateRecord; written: boolean }>;
  /** Changes a running debate's status (failed, cancelled); null when it is finished already. */
  finish(
    id: string,
    status: DebateStatus,
    error?: string,
    now?: number,
  ): Promise<DebateRecord | null>;
  /** A page of debates, newest first. */
  list(
    options?: { status?: DebateStatus; limit?: number; cursor?: string },
  ): Promise<{ debates: DebateRecord[]; cursor?: string }>;
}

/**
 * Creates the store under `prefix` of `kv` (the plugin's keyspace,
 * `ctx.kv.prefix`: the raw KV is used for its list cursors).
 *
 * @example Usage
 * ```ts ignore
 * const store = createDebateStore(ctx.kernel.get("state:kv"), ctx.kv.prefix);
 * const page = await store.list({ status: "consensus", limit: 20 });
 * ```
 */
export function createDebateStore(
  kv: Deno.Kv,
  prefix: Deno.KvKey,
): DebateStore {
  const k = (...parts: Deno.KvKeyPart[]): Deno.KvKey => [...prefix, ...parts];
  const key = (id: string) => k("debate", id);
  const index = (d: DebateRecord) =>
    k("by-status", d.status, d.createdAt, d.id);

  const update = async (
    id: string,
    change: (d: DebateRecord) => DebateRecord | null,
    extra?: (op: Deno.AtomicOperation) => void,
    guard?: Deno.KvKey,
  ): Promise<{ debate: DebateRecord | null; written: boolean }> => {
    for (let i = 0;; i++) {
      const [entry, guarded] = await Promise.all([
        kv.get<DebateRecord>(key(id)),
        guard ? kv.get(guard) : Promise.resolve(null),
      ]);
      if (!entry.value) {
        throw new Error(`debate '${id}' is not in the store`);
      }
      if (guarded && guarded.versionstamp !== null) {
        return { debate: entry.value, written: false };
      }
      const next = change(entry.value);
      if (!next) return { debate: entry.value, written: false };
      const op = kv.atomic().check(entry);
      if (guarded) op.check(guarded);
      op.set(key(id), next);
      if (next.status !== entry.value.status) {
        op.delete(index(entry.value)).set(index(next), id);
      }
      extra?.(op);
      const r = await op.commit();
      if (r.ok) return { debate: next, written: true };
      if (i > 50) throw new Error(`debate '${id}': too many write conflicts`);
    }
  };

  const store: DebateStore = {
    async create(d) {
      const r = await kv.atomic()
        .check({ key: key(d.id), versionstamp: null })
        .set(key(d.id), d)
        .set(index(d), d.id)
        .set(k("by-time", d.createdAt, d.id), d.id)
        .commit();
      if (!r.ok) throw new Error(`debate '${d.id}' exists already`);
    },
    async get(id) {
      return (await kv.get<DebateRecord>(key(id))).value;
    },
    async view(id) {
      const d = await store.get(id);
      if (!d) return null;
      const [turns, roundResults] = await Promise.all([
        store.turns(id),
        store.rounds(id),
      ]);
      return { ...d, turns, roundResults };
    },
    async turn(id, round, participant) {
      return (await kv.get<Turn>(k("turn", id, round, participant))).value;
    },
    async turns(id, from = 1, to = Number.MAX_SAFE_INTEGER) {
      const out: Turn[] = [];
      const selector = {
        start: k("turn", id, from),
        end: k("turn", id, to + 1),
      };
      for await (const e of kv.list<Turn>(selector)) out.push(e.value);
      return out;
    },
    async recordTurn(id, t) {
      const at = k("turn", id, t.round, t.participant);
      const r = await kv.atomic().check({ key: at, versionstamp: null }).set(
        at,
        t,
      ).commit();
      if (r.ok) return { turn: t, written: true };
      return { turn: (await kv.get<Turn>(at)).value!, written: false };
    },
    async round(id, round) {
      return (await kv.get<RoundRecord>(k("round", id, round))).value;
    },
    async rounds(id, from = 1, to = Number.MAX_SAFE_INTEGER) {
      const out: RoundRecord[] = [];
      const selector = {
        start: k("round", id, from),
        end: k("round", id, to + 1),
      };
      for await (const e of kv.list<RoundRecord>(selector)) out.push(e.value);
      return out;
    },
    async moderation(id, round) {
      return (await kv.get<Moderation>(k("moderation", id, round))).value;
    },
    async recordModeration(id, m) {
      const at = k("moderation", id, m.round);
      const r = await kv.atomic().check({ key: at, versionstamp: null }).set(
        at,
        m,
      ).commit();
      return r.ok ? m : (await kv.get<Moderation>(at)).value!;
    },
    async recordRound(id, r, change) {
      const at = k("round", id, r.round);
      const out = await update(id, change, (op) => op.set(at, r), at);
      return { debate: out.debate!, written: out.written };
    },
    async finish(id, status, error, now = Date.now()) {
      const out = await update(
        id,
        (d) =>
          FINISHED_STATUSES.has(d.status) ? null : {
            ...d,
            status,
            updatedAt: now,
            finishedAt: now,
            ...(error ? { error } : {}),
          },
      );
      return out.written ? out.debate : null;
    },
    async list(options = {}) {
      const limit = Math.min(Math.max(options.limit ?? 50, 1), 500);
      const iter = kv.list<string>({
        prefix: options.status ? k("by-status", options.status) : k("by-time"),
      }, {
        limit,
        reverse: true,
        ...(options.cursor ? { cursor: options.cursor } : {}),
      });
      const ids: string[] = [];
      for await (const e of iter) ids.push(e.value);
      const found = await Promise.all(ids.map((id) => store.get(id)));
      const debates = found.filter((d): d is DebateRecord => d !== null);
      return {
        debates,
        ...(ids.length === limit && iter.cursor ? { cursor: iter.cursor } : {}),
      };
    },
  };
  return store;
}
