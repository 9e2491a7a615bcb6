/**
 * Porcupine's bundled Jepsen etcd histories (`test_data/jepsen/etcd_NNN.log`
 * in the Go module) as {@linkcode Operation} lists for
 * `testing/linearizability.ts`, and their expected verdicts (from
 * `porcupine_test.go`'s `checkJepsen(t, N, verdict)` lines).
 *
 * Jepsen logs one line per event: `P :invoke :read nil`, `P :ok :write 3`,
 * `P :ok|:fail :cas [a b]`, `P :fail :read :timed-out`, and `:info` for an
 * operation whose outcome is unknown (its process crashed; Jepsen gives the
 * next operation a new process number). Times are line numbers.
 *
 * Unknown outcomes (`:info`, a timed-out read, an invoke never answered)
 * follow one of two conventions:
 * - `"pending"` (this checker's): the operation never returned — return
 *   time `Infinity`, output unknown; it may have taken effect after its
 *   call, or never.
 * - `"closed"` (Porcupine's test harness): it returns at the end of the
 *   history with an unknown output, so it must take effect somewhere, but
 *   may do so last.
 * Both give the same verdicts: an effect placed after everything else is
 * seen by nobody.
 *
 * @module
 */
import type { Model, Operation } from "../../testing/linearizability.ts";

/** An etcd register operation, as Porcupine's `etcdInput`. */
export type EtcdInput =
  | { op: "read" }
  | { op: "write"; value: number }
  | { op: "cas"; from: number; to: number };

/** What came back: a read's value (`null`: the key does not exist), or whether a cas swapped. */
export type EtcdOutput = { value: number | null } | { ok: boolean } | {
  written: true;
};

/** How an operation with an unknown outcome enters the history. */
export type UnknownConvention = "pending" | "closed";

const LINE =
  /^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(invoke|ok|fail|info)\s+:(read|write|cas)\s+(.*)$/;

/**
 * Parses one Jepsen etcd log into operations.
 *
 * @example
 * ```ts
 * import { parseJepsenEtcd } from "./_jepsen_etcd.ts";
 * const ops = parseJepsenEtcd(
 *   "INFO  jepsen.util - 0\t:invoke\t:write\t4\nINFO  jepsen.util - 0\t:ok\t:write\t4\n",
 *   "pending",
 * );
 * if (ops.length !== 1 || ops[0].return !== 1) throw new Error("parse");
 * ```
 */
export function parseJepsenEtcd(
  text: string,
  unknown: UnknownConvention,
): Operation<EtcdInput, EtcdOutput>[] {
  const ops: Operation<EtcdInput, EtcdOutput>[] = [];
  const open = new Map<number, Operation<EtcdInput, EtcdOutput>>();
  const unknowns: Operation<EtcdInput, EtcdOutput>[] = [];
  const lines = text.split("\n");
  let t = 0;
  for (const line of lines) {
    const m = LINE.exec(line.trimEnd());
    if (!m) continue;
    t++;
    const [, procText, kind, f, arg] = m;
    const proc = Number(procText);
    if (kind === "invoke") {
      const input: EtcdInput = f === "read"
        ? { op: "read" }
        : f === "write"
        ? { op: "write", value: Number(arg) }
        : casArgs(arg);
      const op = {
        clientId: proc,
        input,
        call: t,
        output: undefined,
        return: Infinity,
      };
      open.set(proc, op);
      ops.push(op);
      continue;
    }
    const op = open.get(proc);
    if (!op) throw new Error(`line ${t}: process ${proc} completes nothing`);
    open.delete(proc);
    if (kind === "ok") {
      op.return = t;
      op.output = f === "read"
        ? { value: arg === "nil" ? null : Number(arg) }
        : f === "write"
        ? { written: true }
        : { ok: true };
    } else if (kind === "fail" && f === "cas") {
      op.return = t;
      op.output = { ok: false };
    } else {
      // :info, a timed-out read, a failed write: the outcome is unknown.
      unknowns.push(op);
    }
  }
  unknowns.push(...open.values());
  if (unknown === "closed") {
    for (const op of unknowns) op.return = t + 1;
  }
  return ops;
}

function casArgs(arg: string): EtcdInput {
  const m = /^\[(\d+)\s+(\d+)\]$/.exec(arg);
  if (!m) throw new Error(`bad cas arguments '${arg}'`);
  return { op: "cas", from: Number(m[1]), to: Number(m[2]) };
}

/**
 * Porcupine's `etcdModel`: one register, initially absent; a read sees the
 * value, a write sets it, a cas swaps when it matches.
 *
 * @example
 * ```ts
 * import { etcdModel } from "./_jepsen_etcd.ts";
 * const [ok, next] = etcdModel.step(null, { op: "write", value: 3 }, undefined);
 * if (!ok || next !== 3) throw new Error("write");
 * ```
 */
export const etcdModel: Model<number | null, EtcdInput, EtcdOutput> = {
  init: () => null,
  overwrites: (input) => input.op === "write",
  readOnly: (input, output) =>
    input.op === "read" ||
    (input.op === "cas" && output !== undefined && "ok" in output &&
      !output.ok),
  step(state, input, output) {
    switch (input.op) {
      case "read":
        return [
          output === undefined ||
          ("value" in output && output.value === state),
          state,
        ];
      case "write":
        return [true, input.value];
      case "cas": {
        const swaps = state === input.from;
        if (output !== undefined && "ok" in output && output.ok !== swaps) {
          return [false, state];
        }
        return [true, swaps ? input.to : state];
      }
    }
  },
};

/**
 * The expected verdict of each history, from `porcupine_test.go`'s
 * `checkJepsen(t, N, true|false)` lines: history number → linearizable.
 *
 * @example
 * ```ts
 * import { expectedVerdicts } from "./_jepsen_etcd.ts";
 * const v = expectedVerdicts("checkJepsen(t, 2, true)\ncheckJepsen(t, 3, false)");
 * if (v.get(2) !== true || v.get(3) !== false) throw new Error("verdicts");
 * ```
 */
export function expectedVerdicts(goTest: string): Map<number, boolean> {
  const out = new Map<number, boolean>();
  for (
    const m of goTest.matchAll(/checkJepsen\(t,\s*(\d+),\s*(true|false)\)/g)
  ) {
    out.set(Number(m[1]), m[2] === "true");
  }
  return out;
}
