/**
 * Runs passes of some work one at a time, coalescing requests: a request
 * made while a pass runs gets one more pass after it, and every request
 * resolves only after a pass that **started after it was made** (so a caller
 * that just enqueued something knows whether that pass saw it).
 *
 * @module
 */

/**
 * Makes the requests for `pass`: `request()` asks for a pass, `settled()`
 * waits for the run in progress (if any) without asking for one. `more()`
 * says whether another requested pass may still run (e.g. the connection is
 * still open), and `fail` gets a pass's error (the request still resolves).
 *
 * @example Usage
 * ```ts
 * import { serialPasses } from "./passes.ts";
 * let passes = 0;
 * const { request } = serialPasses(() => Promise.resolve(void passes++), {
 *   more: () => true,
 *   fail: (err) => console.error(err),
 * });
 * await Promise.all([request(), request(), request()]);
 * passes; // 2: the first request's pass, then one for the two made meanwhile
 * ```
 */
export function serialPasses(
  pass: () => Promise<void>,
  options: { more: () => boolean; fail: (err: unknown) => void },
): { request(): Promise<void>; settled(): Promise<void> } {
  let running: Promise<void> | undefined;
  let again = false;
  const settled = () => running ?? Promise.resolve();
  const request = () => {
    again = true;
    if (running) return running;
    let done = false;
    const run = (async () => {
      try {
        let first = true;
        while (again && (first || options.more())) {
          first = false;
          again = false;
          await pass();
        }
      } catch (err) {
        options.fail(err);
      } finally {
        // Cleared in the same step that saw no request left, so a request
        // made after that starts a new run rather than joining one that is
        // about to resolve without another pass.
        done = true;
        running = undefined;
      }
    })();
    if (!done) running = run;
    return run;
  };
  return { request, settled };
}
