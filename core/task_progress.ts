/**
 * The check every `ctx.progress(fraction, message?)` of a task handler runs,
 * in the node and inside a plugin sandbox alike (so no dependencies).
 *
 * @module
 */

/** Longest progress message, in characters. */
export const MAX_PROGRESS_MESSAGE = 1024;

/**
 * Throws a RangeError naming the task unless `fraction` is a number in
 * [0, 1] and `message`, when given, a string of at most
 * {@linkcode MAX_PROGRESS_MESSAGE} characters.
 *
 * @example Usage
 * ```ts
 * import { checkProgress } from "./task_progress.ts";
 * import assert from "node:assert/strict";
 * checkProgress("t1", 0.5, "half way");
 * assert.throws(() => checkProgress("t1", 1.5), /fraction must be a number in \[0, 1\], got 1.5/);
 * ```
 */
export function checkProgress(
  taskId: string,
  fraction: unknown,
  message?: unknown,
): void {
  if (typeof fraction !== "number" || !(fraction >= 0 && fraction <= 1)) {
    throw new RangeError(
      `Cannot report progress of task '${taskId}': fraction must be a number in [0, 1], got ${
        String(fraction)
      }`,
    );
  }
  if (
    message !== undefined &&
    (typeof message !== "string" || message.length > MAX_PROGRESS_MESSAGE)
  ) {
    throw new RangeError(
      `Cannot report progress of task '${taskId}': message must be a string of at most ${MAX_PROGRESS_MESSAGE} characters`,
    );
  }
}
