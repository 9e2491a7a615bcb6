/**
 * HTTP requests and responses as structured-clone values, to carry a plugin
 * route's request into its sandbox and the answer back. Bodies are read
 * whole (the node's body limit applies before a request gets here).
 *
 * @module
 */

/** A request as it crosses the sandbox boundary. */
export interface SerialRequest {
  method: string;
  url: string;
  headers: [string, string][];
  body?: Uint8Array<ArrayBuffer>;
}

/** A response as it crosses the sandbox boundary. */
export interface SerialResponse {
  status: number;
  headers: [string, string][];
  body?: Uint8Array<ArrayBuffer>;
}

/**
 * Reads `req` into its serial form.
 *
 * @example Usage
 * ```ts
 * import { serialRequest, toRequest } from "./serial.ts";
 * import assert from "node:assert/strict";
 * const s = await serialRequest(new Request("http://x/a", { method: "POST", body: "hi" }));
 * assert.equal(await toRequest(s).text(), "hi");
 * ```
 */
export async function serialRequest(req: Request): Promise<SerialRequest> {
  const hasBody = req.method !== "GET" && req.method !== "HEAD" &&
    req.body !== null;
  return {
    method: req.method,
    url: req.url,
    headers: [...req.headers],
    ...(hasBody ? { body: new Uint8Array(await req.arrayBuffer()) } : {}),
  };
}

/** The request a serial form describes. */
export function toRequest(s: SerialRequest): Request {
  return new Request(s.url, {
    method: s.method,
    headers: s.headers,
    body: s.body,
  });
}

/** Reads `res` into its serial form. */
export async function serialResponse(res: Response): Promise<SerialResponse> {
  const body = res.body === null
    ? undefined
    : new Uint8Array(await res.arrayBuffer());
  return { status: res.status, headers: [...res.headers], body };
}

/** The response a serial form describes. */
export function toResponse(s: SerialResponse): Response {
  const nullBody = s.status === 204 || s.status === 304 || s.status < 200;
  return new Response(nullBody ? null : s.body, {
    status: s.status,
    headers: s.headers,
  });
}
