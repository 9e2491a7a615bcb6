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
  return new Request(s.url, {
    method: s.method,
    headers: headerInit(s.headers),
    body: s.body,
  });
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
  const nullBody = s.status === 204 || s.status === 304 || s.status < 200;
  return new Response(nullBody ? null : s.body, {
    status: s.status,
    headers: headerInit(s.headers),
  });
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
  return new Request(p[1], {
    method: p[0],
    headers: flatHeaderInit(p, 3),
    body: p[2],
  });
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
  const status = p[0];
  const nullBody = status === 204 || status === 304 || status < 200;
  return new Response(nullBody ? null : p[1], {
    status,
    headers: flatHeaderInit(p, 2),
  });
}

// Headers.forEach costs a fifth of spreading its iterator (no iterator
// result objects): ~0.2 µs against ~1.1 µs for a few headers, on every
// request and every answer.
function headerPairs(headers: Headers): [string, string][] {
  const out: [string, string][] = [];
  headers.forEach((value, name) => out.push([name, value]));
  return out;
}

// A record is converted into Headers faster than a list of pairs (~0.5 µs
// per Response); a list keeps a repeated name (set-cookie, the one name
// Headers yields more than once). No prototype: a header named __proto__
// stays a header.
function headerInit(pairs: [string, string][]): HeadersInit {
  const record: Record<string, string> = Object.create(null);
  for (const [name, value] of pairs) {
    if (name in record) return pairs;
    record[name] = value;
  }
  return record;
}

/** {@linkcode headerInit} of the names and values in turn from `list[from]` on. */
function flatHeaderInit(list: readonly unknown[], from: number): HeadersInit {
  const record: Record<string, string> = Object.create(null);
  for (let i = from; i < list.length; i += 2) {
    const name = list[i] as string;
    if (name in record) {
      const pairs: [string, string][] = [];
      for (let j = from; j < list.length; j += 2) {
        pairs.push([list[j] as string, list[j + 1] as string]);
      }
      return pairs;
    }
    record[name] = list[i + 1] as string;
  }
  return record;
}
