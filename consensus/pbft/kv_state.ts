/**
 * The replicated KV the PBFT plugin serves: Raft's {@linkcode KvMachine}
 * for the commands, plus reads ordered like writes (linearizable), plus
 * each client's last reply so a request retried or ordered twice takes
 * effect once and is answered with the same result (PBFT's exactly-once
 * per client timestamp). Its serialisation is the checkpointed state:
 * every honest replica produces the same bytes at the same sequence number.
 *
 * @module
 */
import {
  type KvCommand,
  KvMachine,
  type KvResult,
  parseKvCommand,
} from "../raft/kv_machine.ts";
import { RECENT_T } from "./core.ts";
import type { PbftRequest } from "./types.ts";

/**
 * What the state machine keeps of a client (exactly once): its highest
 * executed `t` and that request's result; the timestamps below it, within
 * the last {@linkcode RECENT_T}, that it skipped (`gaps`: they may still run
 * once, out of order); and the results of those that then did (`late`).
 * Both lists are absent while the client's requests run in order, so the
 * checkpointed state is what it was without them.
 */
interface ClientRecord {
  t: number;
  result: string;
  gaps?: number[];
  late?: [number, string][];
}

/** Whether a request `t` of this client already ran, or is too old to run now. */
function ranBefore(c: ClientRecord, t: number): boolean {
  if (t > c.t) return false;
  if (t <= c.t - RECENT_T) return true;
  return !(c.gaps?.includes(t) ?? false);
}

/** The client's record after its request `t` ran with `result`. */
function record(
  c: ClientRecord | undefined,
  t: number,
  result: string,
): ClientRecord {
  if (c && t < c.t) {
    // Out of order: a gap filled.
    const gaps = c.gaps!.filter((x) => x !== t);
    const late = [...(c.late ?? []), [t, result] as [number, string]];
    return {
      t: c.t,
      result: c.result,
      ...(gaps.length ? { gaps } : {}),
      late,
    };
  }
  const from = Math.max((c?.t ?? 0) + 1, t - RECENT_T + 1);
  const gaps = [
    ...(c?.gaps ?? []).filter((x) => x > t - RECENT_T),
    ...Array.from({ length: Math.max(0, t - from) }, (_, i) => from + i),
  ];
  const late = (c?.late ?? []).filter(([x]) => x > t - RECENT_T);
  return {
    t,
    result,
    ...(gaps.length ? { gaps } : {}),
    ...(late.length ? { late } : {}),
  };
}

/** An operation in a request: a KV command or a read. */
export type PbftKvOp = KvCommand | { op: "read"; key: string };

/** What an operation returned. */
export type PbftKvResult = KvResult | { value: string | null } | {
  error: string;
};

/**
 * What the replicas agree on and send for one operation: a command's
 * result without its `value`, which follows from the command and `previous`
 * (see {@linkcode fullResult}); a read's value; or an error. Leaving the
 * value out halves a 1 KiB write's result, which every replica serialises
 * and hashes and the client's node parses.
 */
export type PbftKvAnswer =
  | { ok: boolean; previous: string | null }
  | { value: string | null }
  | { error: string };

/**
 * The result of `op` from the replicas' answer: a command's `value` is what
 * it wrote when `ok` (null for a delete), else the value it found.
 *
 * @example Usage
 * ```ts
 * import { fullResult } from "./kv_state.ts";
 * fullResult({ op: "write", key: "x", value: "1" }, { ok: true, previous: null });
 * // { ok: true, value: "1", previous: null }
 * fullResult({ op: "cas", key: "x", expect: "0", value: "2" }, { ok: false, previous: "1" });
 * // { ok: false, value: "1", previous: "1" }
 * ```
 */
export function fullResult(op: PbftKvOp, answer: PbftKvAnswer): PbftKvResult {
  if (!("ok" in answer)) return answer;
  if (op.op === "read") {
    return { error: "pbft: a read was answered like a command" };
  }
  const value = !answer.ok
    ? answer.previous
    : op.op === "delete"
    ? null
    : op.value;
  return { ok: answer.ok, value, previous: answer.previous };
}

/**
 * Parses an operation, with an error naming what was wrong.
 *
 * @example Usage
 * ```ts
 * import { parsePbftKvOp } from "./kv_state.ts";
 * parsePbftKvOp({ op: "read", key: "x" }).op; // "read"
 * ```
 */
export function parsePbftKvOp(v: unknown): PbftKvOp {
  const o = v as { op?: unknown; key?: unknown } | null;
  if (o && typeof o === "object" && o.op === "read") {
    if (typeof o.key !== "string" || o.key === "") {
      throw new TypeError(
        `Cannot parse KV read: key must be a non-empty string, got ${
          JSON.stringify(o.key)
        }`,
      );
    }
    return { op: "read", key: o.key };
  }
  return parseKvCommand(v);
}

/**
 * The state machine.
 *
 * @example Usage
 * ```ts
 * import { PbftKvState } from "./kv_state.ts";
 * const s = new PbftKvState();
 * const w = { client: "c", t: 1, op: JSON.stringify({ op: "write", key: "x", value: "1" }), sig: "" };
 * s.execute(w); // '{"ok":true,"previous":null}' (see fullResult)
 * s.execute(w); // undefined: already executed
 * s.lastReply("c", 1); // the same result again
 * ```
 */
export class PbftKvState {
  #kv = new KvMachine();
  #last = new Map<string, ClientRecord>();

  /**
   * Executes `r` once per (client, t): the result as JSON, or undefined for
   * an old request. An `op` holding a JSON list of operations (what the
   * driver sends) runs each in order and answers the list of results.
   */
  execute(r: PbftRequest): string | undefined {
    const last = this.#last.get(r.client);
    if (last && ranBefore(last, r.t)) return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(r.op);
    } catch (err) {
      parsed = err;
    }
    // A node sends its operations together: a list in, a list of results out.
    const json = JSON.stringify(
      Array.isArray(parsed)
        ? parsed.map((op) => this.#run(op))
        : this.#run(parsed),
    );
    this.#last.set(r.client, record(last, r.t, json));
    return json;
  }

  #run(v: unknown): PbftKvAnswer {
    try {
      if (v instanceof Error) throw v;
      const op = parsePbftKvOp(v);
      if (op.op === "read") return { value: this.#kv.get(op.key) };
      const { ok, previous } = this.#kv.apply(op);
      return { ok, previous };
    } catch (err) {
      return { error: err instanceof Error ? err.message : String(err) };
    }
  }

  /** The result of client's request `t` if it was its last one executed. */
  lastReply(client: string, t: number): string | undefined {
    const last = this.#last.get(client);
    if (last?.t === t) return last.result;
    return last?.late?.find(([x]) => x === t)?.[1];
  }

  /** The value of `key` on this replica (not linearizable: read through consensus for that). */
  get(key: string): string | null {
    return this.#kv.get(key);
  }

  /** The state, byte for byte the same on every replica at one sequence number. */
  serialize(): string {
    const clients = [...this.#last].sort(([a], [b]) => (a < b ? -1 : 1));
    return JSON.stringify({ kv: this.#kv.snapshot(), clients });
  }

  /** Replaces the state with a serialised one ("" = empty). */
  restore(data: string): void {
    this.#kv = new KvMachine();
    this.#last = new Map();
    if (data === "") return;
    const o = JSON.parse(data) as {
      kv: string;
      clients: [string, ClientRecord][];
    };
    this.#kv.restore(o.kv);
    this.#last = new Map(o.clients);
  }
}
