/**
 * Moved to `testing/conformance.ts` (public through `@plexus/host/testing`).
 * This re-export stays only for the transport tests under `transports/`
 * that still import `waitFor` and `spawnConsumer` from here; delete it once
 * they import `testing/conformance.ts`.
 *
 * @module
 */
export * from "../../testing/conformance.ts";
