/**
 * Random linearizable key-value histories generated from a real sequential
 * execution: clients call at random times, each operation takes effect on
 * one sequential store at a random later instant and returns later still,
 * so intervals overlap at random. Some clients crash between call and
 * return: their operation stays pending (having taken effect or not) and a
 * new process takes their place.
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
import { mulberry32 } from "./replicated_register.ts";

/** Options of {@linkcode randomKvHistory}. */
export interface RandomHistoryOptions {
  /** Operations to start. */
  ops: number;
  /** Concurrent clients (the most operations open at once). */
  clients: number;
  /** Keys `k0`, `k1`, ... to spread them over. @default 1 */
  keys?: number;
  /** Chance, at each step of a busy client, that it crashes. @default 0 */
  crashRate?: number;
  /** Values are drawn from `0 .. values - 1`. @default 6 */
  values?: number;
}

/** A generated history and the order its operations took effect in. */
export interface RandomHistory {
  /** What the clients saw, in call order. */
  history: Operation<KvInput, KvOutput>[];
  /** The operations that took effect, in order (objects of `history`). */
  applied: Operation<KvInput, KvOutput>[];
}

/**
 * Generates a history from a seeded run.
 *
 * @example
 * ```ts
 * import { randomKvHistory } from "./random_history.ts";
 * import { check, kvModel } from "../../../testing/linearizability.ts";
 * const { history } = randomKvHistory(1, { ops: 200, clients: 5 });
 * if (check(kvModel(), history) !== "ok") throw new Error("a real execution is linearizable");
 * ```
 */
export function randomKvHistory(
  seed: number,
  options: RandomHistoryOptions,
): RandomHistory {
  const { ops, clients, keys = 1, crashRate = 0, values = 6 } = options;
  const random = mulberry32(seed);
  const int = (n: number) => Math.floor(random() * n);
  const rec = new HistoryRecorder<KvInput, KvOutput>();
  const store = new Map<string, KvValue>();
  const appliedIds: number[] = [];
  const slots = Array.from({ length: clients }, (_, i) => ({
    process: i,
    opId: -1,
    input: undefined as KvInput | undefined,
    output: undefined as KvOutput | undefined,
  }));
  let processes = clients;
  let time = 0;
  let started = 0;
  let open = 0;
  while (started < ops || open > 0) {
    time += 1 + int(3);
    const slot = slots[int(slots.length)];
    if (slot.opId < 0) {
      if (started === ops) continue;
      started++;
      open++;
      const key = `k${int(keys)}`;
      const roll = random();
      slot.input = roll < 0.5
        ? { op: "read", key }
        : roll < 0.8
        ? { op: "write", key, value: int(values) }
        : { op: "cas", key, expected: int(values), value: int(values) };
      slot.output = undefined;
      slot.opId = rec.call(slot.process, slot.input, time);
    } else if (random() < crashRate) {
      rec.abandon(slot.opId);
      slot.opId = -1;
      slot.process = processes++;
      open--;
    } else if (slot.output === undefined) {
      const input = slot.input!;
      const current = store.get(input.key) ?? null;
      if (input.op === "read") slot.output = { value: current };
      else if (input.op === "write") {
        store.set(input.key, input.value);
        slot.output = { ok: true };
      } else {
        const ok = current === input.expected;
        if (ok) store.set(input.key, input.value);
        slot.output = { ok };
      }
      appliedIds.push(slot.opId);
    } else {
      rec.ret(slot.opId, slot.output, time);
      slot.opId = -1;
      open--;
    }
  }
  const history = rec.history();
  return { history, applied: appliedIds.map((id) => history[id]) };
}
