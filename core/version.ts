/**
 * The Plexus version, read from deno.json so there is one place to bump it.
 *
 * @module
 */
import meta from "../deno.json" with { type: "json" };

/** This build's version. */
export const VERSION: string = meta.version;
