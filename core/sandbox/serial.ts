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
    headers: headerPairs(req.headers),
    ...(hasBody ? { body: new Uint8Array(await req.arrayBuffer()) } : {}),
  };
}

/** The request a serial form describes. */
export function toRequest(s: SerialRequest): Request {
  const req = newRequest(s.url, s.method, s.body);
  for (const [name, value] of s.headers) req.headers.append(name, value);
  return req;
}

/** Reads `res` into its serial form. */
export async function serialResponse(res: Response): Promise<SerialResponse> {
  const body = res.body === null
    ? undefined
    : new Uint8Array(await res.arrayBuffer());
  return { status: res.status, headers: headerPairs(res.headers), body };
}

/** The response a serial form describes. */
export function toResponse(s: SerialResponse): Response {
  const res = newResponse(s.status, s.body);
  for (const [name, value] of s.headers) res.headers.append(name, value);
  return res;
}

/**
 * A request as a plugin route carries it across: method, url, body (or
 * `undefined`), then each header's name and value in turn. One flat array
 * of strings clones and reads back in about half the time of a
 * {@linkcode SerialRequest}'s object and pairs, and a route pays that on
 * every request.
 */
export type PackedRequest = [
  method: string,
  url: string,
  body: Uint8Array<ArrayBuffer> | undefined,
  ...headers: string[],
];

/**
 * A response as a plugin route carries it back: status, body, headers as in
 * {@linkcode PackedRequest}. A small body that is valid UTF-8, in a response
 * with a content-type, crosses as a string: the node's side then makes no
 * ArrayBuffer to read it and no copy to answer it (a Response keeps a
 * string as it is; `new Response(bytes)` copies), about 1 µs per answer on
 * the node's thread. The bytes sent are the same.
 */
export type PackedResponse = [
  status: number,
  body: Uint8Array<ArrayBuffer> | string | undefined,
  ...headers: string[],
];

/**
 * Reads `req` into its packed form.
 *
 * @example Usage
 * ```ts
 * import { packRequest, unpackRequest } from "./serial.ts";
 * import assert from "node:assert/strict";
 * const p = await packRequest(new Request("http://x/a", { method: "PUT", body: "hi", headers: { "x-a": "1" } }));
 * const req = unpackRequest(structuredClone(p));
 * assert.equal(req.headers.get("x-a"), "1");
 * assert.equal(await req.text(), "hi");
 * ```
 */
export async function packRequest(req: Request): Promise<PackedRequest> {
  const hasBody = req.method !== "GET" && req.method !== "HEAD" &&
    req.body !== null;
  const p: PackedRequest = [
    req.method,
    req.url,
    hasBody ? new Uint8Array(await req.arrayBuffer()) : undefined,
  ];
  req.headers.forEach((value, name) => p.push(name, value));
  return p;
}

/** The request a packed form describes. */
export function unpackRequest(p: PackedRequest): Request {
  const req = newRequest(p[1], p[0], p[2]);
  const headers = req.headers;
  for (let i = 3; i < p.length; i += 2) {
    headers.append(p[i] as string, p[i + 1] as string);
  }
  return req;
}

/**
 * Reads `res` into its packed form.
 *
 * @example Usage
 * ```ts
 * import { packResponse, unpackResponse } from "./serial.ts";
 * import assert from "node:assert/strict";
 * const p = await packResponse(Response.json({ a: 1 }, { status: 201 }));
 * const res = unpackResponse(structuredClone(p));
 * assert.equal(res.status, 201);
 * assert.deepEqual(await res.json(), { a: 1 });
 * ```
 */
export async function packResponse(res: Response): Promise<PackedResponse> {
  const p: PackedResponse = [res.status, undefined];
  let typed = false;
  res.headers.forEach((value, name) => {
    if (name === "content-type") typed = true;
    p.push(name, value);
  });
  if (res.body !== null) {
    const bytes = new Uint8Array(await res.arrayBuffer());
    p[1] = typed && bytes.length <= TEXT_MAX && utf8(bytes) || bytes;
  }
  return p;
}

// Without a content-type, `new Response(string)` would add text/plain; a
// large body would be decoded and encoded again for little gain.
const TEXT_MAX = 64 << 10;
// fatal: bytes that are not UTF-8 stay bytes; ignoreBOM: a BOM stays in.
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
function utf8(bytes: Uint8Array): string | undefined {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** The response a packed form describes. */
export function unpackResponse(p: PackedResponse): Response {
  const res = newResponse(p[0], p[1]);
  const headers = res.headers;
  for (let i = 2; i < p.length; i += 2) {
    // A string body made the constructor add text/plain; a packed string
    // body always comes with its own content-type, which replaces it.
    const name = p[i] as string, value = p[i + 1] as string;
    if (name === "content-type") headers.set(name, value);
    else headers.append(name, value);
  }
  return res;
}

// Headers.forEach costs a fifth of spreading its iterator (no iterator
// result objects): ~0.2 µs against ~1.1 µs for a few headers, on every
// request and every answer.
function headerPairs(headers: Headers): [string, string][] {
  const out: [string, string][] = [];
  headers.forEach((value, name) => out.push([name, value]));
  return out;
}

// Headers go in after construction: converting a HeadersInit (a record or a
// list of pairs) costs ~2.5 µs per Request or Response, appending them
// ~0.3 µs. Only a body of bytes or none is given here, so the constructor
// adds no content-type of its own (a string's is replaced, see above).
function newRequest(
  url: string,
  method: string,
  body: Uint8Array<ArrayBuffer> | undefined,
): Request {
  return method === "GET" && body === undefined
    ? new Request(url)
    : new Request(url, { method, body });
}

function newResponse(
  status: number,
  body: Uint8Array<ArrayBuffer> | string | undefined,
): Response {
  const nullBody = status === 204 || status === 304 || status < 200;
  return new Response(nullBody ? null : body, { status });
}
