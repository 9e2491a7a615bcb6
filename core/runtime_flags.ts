/**
 * The V8 flags a node runs with, in one place: `deno task start`, the
 * watched node of `deno task dev`, the nodes of `deno task cluster`, the
 * compiled binary, the container image and the bundle's documented command
 * pass them (`runtime_flags_test.ts` checks each), and so do the nodes the
 * benchmarks start (bench/_util.ts `spawnDeno`, bench/run_all.ts).
 *
 * **`--max-semi-space-size=4`** (MiB; V8's default lets it grow to 16): under
 * sustained request/reply traffic a node's young generation grew to its
 * largest and each scavenge then copied 5-8 MB of survivors, a 7-15 ms pause
 * every 40-100 ms, which became the tail of every call in flight. Measured
 * with service calls between two nodes (bench/peers/moleculer.ts, 100 in
 * flight, 2026-12-07): p99 9.5-11.7 ms with the default, 3.6-4.7 ms with 4
 * MiB, at the same or a higher rate (calls/s 1.07 → 1.25 of Moleculer's);
 * the mesh transport alone (request/reply without the broker): scavenges
 * 10 ms → 0.9 ms at the median, p99 10 → 2 ms. 2 MiB gave a similar tail and
 * a lower rate, 8 MiB a p99 near 4 ms. `sealed_payloads` and `gateway`
 * showed no change beyond their noise. docs/configuration.md ("Runtime
 * flags") has the figures; an operator can override them with
 * `DENO_V8_FLAGS` or their own `--v8-flags`.
 *
 * @module
 */

/** V8 flags of a node process (see the module doc). */
export const NODE_V8_FLAGS: readonly string[] = ["--max-semi-space-size=4"];

/**
 * The `deno run` (or `deno compile`) argument that passes
 * {@linkcode NODE_V8_FLAGS}.
 *
 * @example Usage
 * ```ts
 * import { V8_FLAGS_ARG } from "./runtime_flags.ts";
 * import assert from "node:assert/strict";
 * assert.equal(V8_FLAGS_ARG, "--v8-flags=--max-semi-space-size=4");
 * ```
 */
export const V8_FLAGS_ARG = `--v8-flags=${NODE_V8_FLAGS.join(",")}`;
