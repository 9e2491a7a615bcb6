/**
 * The replicated key-value state machine: every node applies the same
 * committed commands in the same order, so every node holds the same map.
 *
 * @module
 */

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
 * snapshot.
 *
 * @example Usage
 * ```ts
 * import { KvMachine } from "./kv_machine.ts";
 * const m = new KvMachine();
 * m.apply({ op: "write", key: "x", value: "1" });
 * m.apply({ op: "cas", key: "x", expect: "1", value: "2" }).ok; // true
 * m.get("x"); // "2"
 * ```
 */
export class KvMachine {
  #map = new Map<string, string>();

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

  /** The whole map as JSON, for a Raft snapshot. */
  snapshot(): string {
    return JSON.stringify([...this.#map]);
  }

  /** Replaces the map with a {@linkcode snapshot}'s (empty string: empty map). */
  restore(data: string): void {
    this.#map = new Map(data ? JSON.parse(data) as [string, string][] : []);
  }
}
