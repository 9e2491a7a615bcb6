/**
 * Calls from one node to another, signed with the calling node's key
 * (RFC 9421, Ed25519): the receiving node finds the key in the shared
 * keyring (every node publishes its own at start) and treats the call as
 * the principal `node:{id}` with the admin role. Each call covers `@method`,
 * `@authority`, `@path`, `@query`, `content-type` and `Content-Digest` when
 * there is a body, with a fresh nonce and `created`, so it cannot be
 * replayed, redirected or altered on the way.
 *
 * @module
 */
import { signRequest } from "../security/http_signatures/mod.ts";
import { currentTraceparent } from "../observe/otel.ts";
import type { Security } from "./security.ts";

/** A `fetch` for node-to-node calls. */
export type NodeFetch = (
  input: string | URL,
  init?: RequestInit,
) => Promise<Response>;

/**
 * A `fetch` that signs every request with this node's key.
 *
 * @example Usage
 * ```ts ignore
 * const call = nodeClient(node.security);
 * const res = await call(`${peer.address}/api/v1/cluster`);
 * ```
 */
export function nodeClient(
  security: Pick<Security, "signingKey">,
): NodeFetch {
  return async (input, init) => {
    // OTel on: the call continues the caller's trace on the other node.
    const traceparent = currentTraceparent();
    if (traceparent) {
      const headers = new Headers(init?.headers);
      if (!headers.has("traceparent")) headers.set("traceparent", traceparent);
      init = { ...init, headers };
    }
    const request = await signRequest(new Request(input, init), {
      key: security.signingKey,
      label: "plexus-node",
    });
    return await fetch(request);
  };
}
