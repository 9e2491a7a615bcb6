/**
 * The replicated key-value state machine: every node applies the same
 * committed commands in the same order, so every node holds the same map.
 * Proposals carry ids, and a copy of one already applied is skipped (see
 * {@linkcode AppliedProposals}).
 *
 * @module
 */
import {
  AppliedProposals,
  type AppliedProposalsJson,
  type AppliedProposalsOptions,
} from "./applied_proposals.ts";

/** A command in the log. `id` ties the result back to its proposer. */
export type KvCommand =
  | { op: "write"; key: string; value: string }
  | { op: "cas"; key: string; expect: string | null; value: string }
  | { op: "delete"; key: string };

/** What applying a command returned. */
export interface KvResult {
  /** False only for a compare-and-set whose `expect` did not match. */
  ok: boolean;
  /** The value after the command (null when absent). */
  value: string | null;
  /** The value before the command (null when absent). */
  previous: string | null;
}

/**
 * Parses and checks a command, with an error naming what was wrong.
 *
 * @example Usage
 * ```ts
 * import { parseKvCommand } from "./kv_machine.ts";
 * parseKvCommand({ op: "write", key: "x", value: "1" }).op; // "write"
 * ```
 */
export function parseKvCommand(v: unknown): KvCommand {
  const c = v as Record<string, unknown> | null;
  if (c === null || typeof c !== "object") {
    throw new TypeError(
      `Cannot parse KV command: expected an object, got ${v}`,
    );
  }
  if (typeof c.key !== "string" || c.key === "") {
    throw new TypeError(
      `Cannot parse KV command: key must be a non-empty string, got ${
        JSON.stringify(c.key)
      }`,
    );
  }
  switch (c.op) {
    case "write":
      if (typeof c.value !== "string") break;
      return { op: "write", key: c.key, value: c.value };
    case "cas":
      if (typeof c.value !== "string") break;
      if (c.expect !== null && typeof c.expect !== "string") {
        throw new TypeError(
          `Cannot parse KV command: expect must be a string or null, got ${
            JSON.stringify(c.expect)
          }`,
        );
      }
      return { op: "cas", key: c.key, expect: c.expect, value: c.value };
    case "delete":
      return { op: "delete", key: c.key };
    default:
      throw new TypeError(
        `Cannot parse KV command: op must be write, cas or delete, got ${
          JSON.stringify(c.op)
        }`,
      );
  }
  throw new TypeError(
    `Cannot parse KV command: value must be a string, got ${
      JSON.stringify(c.value)
    }`,
  );
}

/**
 * An in-memory map driven by committed {@linkcode KvCommand}s, with a JSON
 * snapshot that also holds the ids of the proposals applied.
 *
 * @example Usage
 * ```ts
 * import { KvMachine } from "./kv_machine.ts";
 * const m = new KvMachine();
 * m.apply({ op: "write", key: "x", value: "1" });
 * m.apply({ op: "cas", key: "x", expect: "1", value: "2" }).ok; // true
 * m.get("x"); // "2"
 * m.applyProposal("n1/ab12/1", { op: "write", key: "x", value: "3" }); // applied
 * m.applyProposal("n1/ab12/1", { op: "write", key: "x", value: "3" }); // undefined: a copy
 * ```
 */
export class KvMachine {
  #map = new Map<string, string>();
  #proposals: AppliedProposals;
  readonly #options: AppliedProposalsOptions;

  constructor(options: AppliedProposalsOptions = {}) {
    this.#options = options;
    this.#proposals = new AppliedProposals(options);
  }

  /**
   * Applies proposal `id` unless a copy of it was applied before (it was
   * re-sent to a new leader and both copies committed): then returns
   * undefined and changes nothing.
   */
  applyProposal(id: string, cmd: KvCommand): KvResult | undefined {
    return this.#proposals.admit(id) ? this.apply(cmd) : undefined;
  }

  /** Applies one command; deterministic, so every replica agrees. */
  apply(cmd: KvCommand): KvResult {
    const previous = this.#map.get(cmd.key) ?? null;
    switch (cmd.op) {
      case "write":
        this.#map.set(cmd.key, cmd.value);
        return { ok: true, value: cmd.value, previous };
      case "cas":
        if (previous !== cmd.expect) {
          return { ok: false, value: previous, previous };
        }
        this.#map.set(cmd.key, cmd.value);
        return { ok: true, value: cmd.value, previous };
      case "delete":
        this.#map.delete(cmd.key);
        return { ok: true, value: null, previous };
    }
  }

  /** The value of `key`, or null. */
  get(key: string): string | null {
    return this.#map.get(key) ?? null;
  }

  /** Number of keys. */
  get size(): number {
    return this.#map.size;
  }

  /** The whole map and the applied proposal ids as JSON, for a Raft snapshot. */
  snapshot(): string {
    return JSON.stringify({
      kv: [...this.#map],
      proposals: this.#proposals.toJSON(),
    });
  }

  /**
   * Replaces the state with a {@linkcode snapshot}'s (empty string: empty
   * map; a bare array of pairs: a snapshot from before proposal ids were kept).
   */
  restore(data: string): void {
    const parsed = data ? JSON.parse(data) as SnapshotJson : [];
    this.#proposals = new AppliedProposals(this.#options);
    if (Array.isArray(parsed)) {
      this.#map = new Map(parsed);
      return;
    }
    this.#map = new Map(parsed.kv);
    this.#proposals.restore(parsed.proposals);
  }
}

type SnapshotJson =
  | [string, string][]
  | { kv: [string, string][]; proposals: AppliedProposalsJson };
