import assert from "node:assert/strict";
import {
  packRequest,
  packResponse,
  serialRequest,
  serialResponse,
  toRequest,
  toResponse,
  unpackRequest,
  unpackResponse,
} from "./serial.ts";

Deno.test("serial: a request keeps its method, url, headers and body across; a GET has no body", async () => {
  const get = await serialRequest(
    new Request("http://x/a?b=1", {
      headers: [["accept", "text/plain"], ["x-two", "1"], ["x-two", "2"]],
    }),
  );
  assert.equal(get.body, undefined);
  assert.deepEqual(get.headers, [["accept", "text/plain"], ["x-two", "1, 2"]]);
  const back = toRequest(get);
  assert.equal(back.url, "http://x/a?b=1");
  assert.equal(back.headers.get("x-two"), "1, 2");

  const post = await serialRequest(
    new Request("http://x/p", { method: "POST", body: "hi" }),
  );
  const req = toRequest(structuredClone(post));
  assert.equal(req.method, "POST");
  assert.equal(await req.text(), "hi");
});

Deno.test("serial: a response keeps its status, every set-cookie, a header named __proto__ and its bytes", async () => {
  const headers = new Headers([["content-type", "application/octet-stream"]]);
  headers.append("set-cookie", "a=1");
  headers.append("set-cookie", "b=2");
  headers.append("__proto__", "kept");
  const bytes = new Uint8Array([0xef, 0xbb, 0xbf, 0xff, 0]);
  const s = await serialResponse(new Response(bytes, { status: 201, headers }));
  const res = toResponse(structuredClone(s));
  assert.equal(res.status, 201);
  assert.deepEqual(res.headers.getSetCookie(), ["a=1", "b=2"]);
  assert.equal(res.headers.get("__proto__"), "kept");
  assert.deepEqual(new Uint8Array(await res.arrayBuffer()), bytes);

  const single = toResponse(
    await serialResponse(new Response(null, { headers: [["__proto__", "x"]] })),
  );
  assert.equal(single.headers.get("__proto__"), "x");
  assert.equal(toResponse({ status: 204, headers: [] }).body, null);
});

Deno.test("serial: the packed forms keep method, url, body, status, every set-cookie, a header named __proto__ and binary bytes", async () => {
  const get = await packRequest(
    new Request("http://x/a?b=1", {
      headers: [["x-two", "1"], ["x-two", "2"]],
    }),
  );
  assert.deepEqual(get, ["GET", "http://x/a?b=1", undefined, "x-two", "1, 2"]);
  const req = unpackRequest(
    structuredClone(
      await packRequest(
        new Request("http://x/p", {
          method: "POST",
          body: "hi",
          headers: [["__proto__", "kept"]],
        }),
      ),
    ),
  );
  assert.equal(req.method, "POST");
  assert.equal(req.headers.get("__proto__"), "kept");
  assert.equal(await req.text(), "hi");

  const headers = new Headers([["__proto__", "kept"]]);
  headers.append("set-cookie", "a=1");
  headers.append("set-cookie", "b=2");
  const bytes = new Uint8Array([0xef, 0xbb, 0xbf, 0xff, 0]);
  const res = unpackResponse(
    structuredClone(
      await packResponse(new Response(bytes, { status: 202, headers })),
    ),
  );
  assert.equal(res.status, 202);
  assert.deepEqual(res.headers.getSetCookie(), ["a=1", "b=2"]);
  assert.equal(res.headers.get("__proto__"), "kept");
  assert.deepEqual(new Uint8Array(await res.arrayBuffer()), bytes);
  assert.equal(unpackResponse([304, new Uint8Array([1])]).body, null);
});

Deno.test("serial: a small UTF-8 answer with a content-type crosses as a string and answers the same bytes; other bodies stay bytes and no content-type is added", async () => {
  const bom = new Uint8Array([
    0xef,
    0xbb,
    0xbf,
    ...new TextEncoder().encode("é{}"),
  ]);
  const text = await packResponse(
    new Response(bom, { headers: { "content-type": "application/json" } }),
  );
  assert.equal(typeof text[1], "string");
  const res = unpackResponse(structuredClone(text));
  assert.deepEqual(new Uint8Array(await res.arrayBuffer()), bom);
  assert.equal(res.headers.get("content-type"), "application/json");

  const notUtf8 = new Uint8Array([0x7b, 0xff, 0x7d]);
  const binary = await packResponse(
    new Response(notUtf8, { headers: { "content-type": "text/plain" } }),
  );
  assert.ok(binary[1] instanceof Uint8Array);
  assert.deepEqual(
    new Uint8Array(await unpackResponse(binary).arrayBuffer()),
    notUtf8,
  );

  const untyped = await packResponse(new Response(new Uint8Array([104, 105])));
  assert.ok(untyped[1] instanceof Uint8Array);
  const plain = unpackResponse(untyped);
  assert.equal(plain.headers.get("content-type"), null);
  assert.equal(await plain.text(), "hi");
});
