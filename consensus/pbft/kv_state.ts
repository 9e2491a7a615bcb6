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
import type { PbftRequest } from "./types.ts";

/** An operation in a request: a KV command or a read. */
export type PbftKvOp = KvCommand | { op: "read"; key: string };

/** What an operation returned. */
export type PbftKvResult = KvResult | { value: string | null } | {
  error: string;
};

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
 * s.execute(w); // '{"ok":true,"value":"1","previous":null}'
 * s.execute(w); // undefined: already executed
 * s.lastReply("c", 1); // the same result again
 * ```
 */
export class PbftKvState {
  #kv = new KvMachine();
  #last = new Map<string, { t: number; result: string }>();

  /**
   * Executes `r` once per (client, t): the result as JSON, or undefined for
   * an old request. An `op` holding a JSON list of operations (what the
   * driver sends) runs each in order and answers the list of results.
   */
  execute(r: PbftRequest): string | undefined {
    const last = this.#last.get(r.client);
    if (last && last.t >= r.t) return undefined;
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
    this.#last.set(r.client, { t: r.t, result: json });
    return json;
  }

  #run(v: unknown): PbftKvResult {
    try {
      if (v instanceof Error) throw v;
      const op = parsePbftKvOp(v);
      return op.op === "read"
        ? { value: this.#kv.get(op.key) }
        : this.#kv.apply(op);
    } catch (err) {
      return { error: err instanceof Error ? err.message : String(err) };
    }
  }

  /** The result of client's request `t` if it was its last one executed. */
  lastReply(client: string, t: number): string | undefined {
    const last = this.#last.get(client);
    return last?.t === t ? last.result : undefined;
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
      clients: [string, { t: number; result: string }][];
    };
    this.#kv.restore(o.kv);
    this.#last = new Map(o.clients);
  }
}
