/**
 * A Worker of `checkParallel` (`./linearizability_parallel.ts`): it loads
 * the model named in its first message, then checks each partition it is
 * sent and replies with the result.
 *
 * @module
 */
import { check, type Model } from "./linearizability.ts";
import { loadModel } from "./linearizability_parallel.ts";

/** The Worker global (this module runs only inside a Worker). */
const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(message: unknown): void;
};
let model: Promise<Model<unknown, unknown, unknown>> | undefined;

scope.onmessage = async (e: MessageEvent) => {
  const msg = e.data;
  if ("module" in msg) {
    model = loadModel({ module: msg.module, export: msg.export });
    model.catch((err: Error) => scope.postMessage({ error: err.message }));
    return;
  }
  try {
    const result = check(await model!, msg.ops, { timeoutMs: msg.timeoutMs });
    scope.postMessage({ partition: msg.partition, result });
  } catch (err) {
    scope.postMessage({ error: (err as Error).message });
  }
};
