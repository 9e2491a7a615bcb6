import assert from "node:assert/strict";
import { createContentDigest, verifyContentDigest } from "./content_digest.ts";

const HELLO = '{"hello": "world"}';
// RFC 9530 and RFC 9421 B.2 (request); the response value is SHA-512 of
// '{"message": "good dog"}' as published in RFC 9421.
const HELLO_SHA256 = "X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=";
const HELLO_SHA512 =
  "WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==";
const GOOD_DOG_SHA512 =
  "mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGgfLQ==";

Deno.test("content digest: sha-256 and sha-512 values match the RFC examples", async () => {
  assert.equal(
    await createContentDigest(HELLO),
    `sha-256=:${HELLO_SHA256}:`,
  );
  assert.equal(
    await createContentDigest(new TextEncoder().encode(HELLO), {
      algorithms: ["sha-512", "sha-256"],
    }),
    `sha-512=:${HELLO_SHA512}:, sha-256=:${HELLO_SHA256}:`,
  );
  assert.equal(
    await createContentDigest('{"message": "good dog"}', {
      algorithms: ["sha-512"],
    }),
    `sha-512=:${GOOD_DOG_SHA512}:`,
  );
});

Deno.test("content digest: a matching header verifies, for each algorithm and both", async () => {
  for (
    const header of [
      `sha-256=:${HELLO_SHA256}:`,
      `sha-512=:${HELLO_SHA512}:`,
      `sha-256=:${HELLO_SHA256}:, sha-512=:${HELLO_SHA512}:`,
      `md5=:AAAA:, sha-512=:${HELLO_SHA512}:`, // unknown algorithms are ignored
    ]
  ) {
    const result = await verifyContentDigest(HELLO, header);
    assert.equal(result.ok, true, header);
  }
  assert.deepEqual(
    await verifyContentDigest(
      HELLO,
      `sha-256=:${HELLO_SHA256}:, sha-512=:${HELLO_SHA512}:`,
    ),
    { ok: true, algorithms: ["sha-256", "sha-512"] },
  );
});

Deno.test("content digest: a tampered body or a wrong digest fails", async () => {
  const header = `sha-256=:${HELLO_SHA256}:`;
  const tampered = await verifyContentDigest('{"hello": "World"}', header);
  assert.equal(tampered.ok, false);
  assert.match((tampered as { reason: string }).reason, /does not match/);
  // One good and one bad algorithm is still a failure.
  const mixed = await verifyContentDigest(
    HELLO,
    `sha-512=:${HELLO_SHA512}:, sha-256=:${GOOD_DOG_SHA512}:`,
  );
  assert.equal(mixed.ok, false);
});

Deno.test("content digest: missing, malformed, duplicated or unsupported headers fail", async () => {
  const cases: (string | null)[] = [
    null,
    "",
    "md5=:1B2M2Y8AsgTpgAmY7PhCfg==:",
    `sha-256=${HELLO_SHA256}`,
    `sha-256="${HELLO_SHA256}"`,
    `sha-256=:${HELLO_SHA256}:, sha-256=:${HELLO_SHA256}:`,
    `sha-256=:${HELLO_SHA256}`,
  ];
  for (const header of cases) {
    const result = await verifyContentDigest(HELLO, header);
    assert.equal(result.ok, false, String(header));
  }
});

Deno.test("content digest: only the accepted algorithms count", async () => {
  const result = await verifyContentDigest(HELLO, `sha-256=:${HELLO_SHA256}:`, {
    algorithms: ["sha-512"],
  });
  assert.equal(result.ok, false);
  assert.match((result as { reason: string }).reason, /none of the accepted/);
});

Deno.test("content digest: an empty body has a digest too", async () => {
  const header = await createContentDigest(new Uint8Array());
  assert.equal(
    header,
    "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
  );
  assert.equal((await verifyContentDigest("", header)).ok, true);
  assert.equal((await verifyContentDigest("x", header)).ok, false);
});
