/**
 * Moved to `testing/memory_transport.ts` (public through
 * `@plexus/host/testing`). This re-export stays only for the JSDoc example
 * in `core/transport_plugin.ts`; delete it once that imports
 * `testing/mod.ts`.
 *
 * @module
 */
export * from "../../testing/memory_transport.ts";
