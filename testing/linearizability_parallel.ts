/**
 * The linearizability checker (`./linearizability.ts`) on several threads:
 * a history's partitions (keys, for a key-value store — linearizability is
 * compositional) are checked in Workers at once, the largest first.
 *
 * A Worker cannot be handed functions, so the model is named by the module
 * that exports it and the export's name: a {@linkcode Model} object, or a
 * function of no arguments that returns one (like `kvModel`). Partitioning
 * happens here, with the same model; each Worker imports it once.
 *
 * The answer is the one {@linkcode check} gives: `"illegal"` as soon as a
 * partition is (the rest are cancelled), `"unknown"` if the deadline passes
 * first, else `"ok"`. For the diagnostic of an illegal history, run
 * `checkDetailed` on it. A Worker costs ~60 ms to start (and its JIT starts
 * cold), more than most histories take: partitions are checked on this
 * thread first, and only what is left after `serialMs` goes to Workers.
 *
 * @module
 */
import {
  check,
  type CheckOptions,
  type CheckResult,
  type Model,
  type Operation,
} from "./linearizability.ts";

/** Options of {@linkcode checkParallel}. */
export interface ParallelCheckOptions extends CheckOptions {
  /** Workers to run at most. @default navigator.hardwareConcurrency */
  workers?: number;
  /**
   * Partitions are checked on this thread, smallest first, for this long;
   * what is left then goes to Workers, largest first (the partition in
   * progress starts again there). Easy histories finish before it and
   * never pay for a Worker. @default 50
   */
  serialMs?: number;
}

/** The result of {@linkcode checkParallel}. */
export interface ParallelCheckReport {
  /** The answer. */
  result: CheckResult;
  /** How many partitions the history has. */
  partitions: number;
  /** How many were decided before the answer. */
  decided: number;
  /** On `"illegal"`: the index (in the model's partition order) of a failing partition. */
  illegalPartition?: number;
  /** How many Workers ran (0: checked on this thread). */
  workers: number;
}

/** Where the model comes from: a module and the name of its export. */
export interface ModelSource {
  /** The module's URL (e.g. `new URL("./model.ts", import.meta.url)`). */
  module: URL | string;
  /** The export: a `Model`, or a function of no arguments returning one. */
  export: string;
}

/**
 * Loads the model a {@linkcode ModelSource} names, with a clear error when
 * the export is missing or is not a model.
 *
 * @example
 * ```ts
 * import { loadModel } from "./linearizability_parallel.ts";
 * const model = await loadModel({
 *   module: new URL("./linearizability.ts", import.meta.url),
 *   export: "kvModel",
 * });
 * if (model.init() !== null) throw new Error("kv registers start empty");
 * ```
 */
export async function loadModel<S, I, O>(
  source: ModelSource,
): Promise<Model<S, I, O>> {
  const url = String(source.module);
  const mod = await import(url) as Record<string, unknown>;
  const value = mod[source.export];
  const model = typeof value === "function" && value.length === 0
    ? value()
    : value;
  if (
    model === null || typeof model !== "object" ||
    typeof (model as Model<S, I, O>).init !== "function" ||
    typeof (model as Model<S, I, O>).step !== "function"
  ) {
    throw new TypeError(
      `Cannot load model: export '${source.export}' of ${url} is ${
        value === undefined ? "missing" : "not a Model (init, step)"
      }`,
    );
  }
  return model as Model<S, I, O>;
}

/**
 * Checks `history` against the model `source` names, partitions in
 * parallel Workers.
 *
 * @example
 * ```ts
 * import { checkParallel } from "./linearizability_parallel.ts";
 * const report = await checkParallel(
 *   { module: new URL("./linearizability.ts", import.meta.url), export: "kvModel" },
 *   [
 *     { clientId: 0, input: { op: "write", key: "x", value: 1 }, output: { ok: true }, call: 0, return: 10 },
 *     { clientId: 1, input: { op: "read", key: "y" }, output: { value: null }, call: 5, return: 15 },
 *   ],
 * );
 * if (report.result !== "ok") throw new Error(report.result);
 * ```
 */
export async function checkParallel<I, O>(
  source: ModelSource,
  history: Operation<I, O>[],
  options: ParallelCheckOptions = {},
): Promise<ParallelCheckReport> {
  const model = await loadModel<unknown, I, O>(source);
  const now = options.now ?? (() => performance.now());
  const timeoutMs = options.timeoutMs ?? Infinity;
  if (!(timeoutMs >= 0)) {
    throw new RangeError(
      `Cannot check history: timeoutMs must be >= 0, got ${timeoutMs}`,
    );
  }
  const deadline = now() + timeoutMs;
  const switchAt = now() + (options.serialMs ?? 50);
  const parts = model.partition ? model.partition(history) : [history];
  const maxWorkers = Math.max(
    1,
    options.workers ?? navigator.hardwareConcurrency ?? 1,
  );
  const left = parts.map((_, i) => i).sort((a, b) =>
    parts[a].length - parts[b].length
  );
  let decided = 0;
  while (left.length > 0) {
    const parallel = maxWorkers >= 2 && left.length >= 2;
    const budget = parallel
      ? Math.min(deadline, switchAt) - now()
      : deadline - now();
    if (parallel && budget <= 0) break;
    const p = left[0];
    const result = check(model, parts[p], {
      timeoutMs: Math.max(0, budget),
      now,
    });
    if (result === "illegal") {
      return {
        result,
        partitions: parts.length,
        decided: decided + 1,
        illegalPartition: p,
        workers: 0,
      };
    }
    if (result === "unknown") {
      if (!parallel || now() >= deadline) {
        return { result, partitions: parts.length, decided, workers: 0 };
      }
      break; // time to hand the rest to Workers
    }
    decided++;
    left.shift();
  }
  if (left.length === 0) {
    return { result: "ok", partitions: parts.length, decided, workers: 0 };
  }
  const workers = Math.min(maxWorkers, left.length);
  // Largest first: the longest searches start at once (LPT scheduling).
  const queue = left.reverse();
  const pool = Array.from(
    { length: workers },
    () =>
      new Worker(new URL("./_linearizability_worker.ts", import.meta.url), {
        type: "module",
      }),
  );
  try {
    return await new Promise<ParallelCheckReport>((resolve, reject) => {
      let running = 0;
      const finish = (report: Omit<ParallelCheckReport, "workers">) =>
        resolve({ ...report, workers });
      const feed = (w: Worker) => {
        const p = queue.shift();
        if (p === undefined) {
          if (running === 0) {
            finish({ result: "ok", partitions: parts.length, decided });
          }
          return;
        }
        running++;
        w.postMessage({
          partition: p,
          ops: parts[p],
          timeoutMs: Math.max(0, deadline - now()),
        });
      };
      for (const w of pool) {
        w.onmessage = (
          e: MessageEvent<
            { partition: number; result: CheckResult } | { error: string }
          >,
        ) => {
          if ("error" in e.data) return reject(new Error(e.data.error));
          running--;
          const { partition, result } = e.data;
          if (result === "illegal") {
            return finish({
              result,
              partitions: parts.length,
              decided: decided + 1,
              illegalPartition: partition,
            });
          }
          if (result === "unknown") {
            return finish({ result, partitions: parts.length, decided });
          }
          decided++;
          feed(w);
        };
        w.onerror = (e) => {
          e.preventDefault();
          reject(new Error(`linearizability worker failed: ${e.message}`));
        };
        w.postMessage({
          module: String(source.module),
          export: source.export,
        });
        feed(w);
      }
    });
  } finally {
    for (const w of pool) w.terminate();
  }
}
