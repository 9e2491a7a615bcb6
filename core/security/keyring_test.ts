import assert from "node:assert/strict";
import { SignJWT } from "jose";
import { ManualClock } from "../clock.ts";
import { createKeyring, KeyringError } from "./keyring.ts";
import { createJwtAuthority } from "./jwt.ts";
import { generateNodeKey } from "./node_key.ts";
import { trustedKeyKey } from "../state/keys.ts";

// RFC 8032 test 1 public key.
const RFC8032_PK = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const IDENTITY_PK = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

async function refused(p: Promise<unknown>, status: number, re: RegExp) {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof KeyringError, String(err));
    assert.equal(err.status, status);
    assert.match(err.message, re);
    return true;
  });
}

Deno.test("keyring: an Ed25519 key is stored under its did:key by default and resolves for signatures", async () => {
  using kv = await Deno.openKv(":memory:");
  const keys = createKeyring(kv);
  const { key, secret } = await keys.enrol(
    { alg: "ed25519", publicKey: RFC8032_PK, sub: "svc", role: "operator" },
    "root",
  );
  assert.equal(secret, undefined);
  assert.equal(
    key.keyid,
    "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw",
  );
  assert.equal(key.agentDid, key.keyid);
  assert.equal(key.createdBy, "root");
  const sk = await keys.signatureKey(key.keyid);
  assert.equal(sk?.alg, "ed25519");
  assert.equal(sk?.agentDid, key.keyid);
  assert.equal(sk?.key.type, "public");
  assert.deepEqual(
    (await keys.list()).map((k) => [k.keyid, k.role, k.kind]),
    [[key.keyid, "operator", "service"]],
  );
});

Deno.test("keyring: bad enrolments are refused with 400/409 and store nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const keys = createKeyring(kv);
  const base = { alg: "ed25519", sub: "svc", role: "viewer" };
  // A small-order key would verify a crafted signature for any message.
  await refused(
    keys.enrol({ ...base, publicKey: IDENTITY_PK }, "a"),
    400,
    /publicKey: .*small-order point/,
  );
  await refused(
    keys.enrol({ ...base, publicKey: RFC8032_PK.slice(1) }, "a"),
    400,
    /publicKey/,
  );
  await refused(keys.enrol({ ...base }, "a"), 400, /needs 'publicKey'/);
  await refused(
    keys.enrol({ ...base, publicKey: RFC8032_PK, role: "root" }, "a"),
    400,
    /role/,
  );
  await refused(
    keys.enrol({ ...base, publicKey: RFC8032_PK, keyid: 'a"b' }, "a"),
    400,
    /keyid/,
  );
  await refused(
    keys.enrol({ ...base, publicKey: RFC8032_PK, extra: 1 }, "a"),
    400,
    /extra/,
  );
  await refused(
    keys.enrol({
      alg: "hmac-sha256",
      secret: "c2hvcnQ",
      sub: "s",
      role: "viewer",
    }, "a"),
    400,
    /32-128 bytes/,
  );
  assert.deepEqual(await keys.list(), []);
  await keys.enrol({ ...base, publicKey: RFC8032_PK, keyid: "k1" }, "a");
  await refused(
    keys.enrol(
      { ...base, publicKey: RFC8032_PK, keyid: "k1", role: "admin" },
      "a",
    ),
    409,
    /already enrolled/,
  );
  assert.equal((await keys.get("k1"))?.role, "viewer");
});

Deno.test("keyring: a generated HMAC secret is shown once, never listed, and verifies", async () => {
  using kv = await Deno.openKv(":memory:");
  const keys = createKeyring(kv);
  const { key, secret } = await keys.enrol(
    { alg: "hmac-sha256", keyid: "billing", sub: "billing", role: "analyst" },
    "root",
  );
  assert.ok(secret);
  assert.equal(
    Uint8Array.fromBase64(secret, { alphabet: "base64url" }).length,
    32,
  );
  assert.equal("secret" in key, false);
  assert.equal((await keys.list()).some((k) => "secret" in k), false);
  const sk = await keys.signatureKey("billing");
  const mine = await crypto.subtle.importKey(
    "raw",
    Uint8Array.fromBase64(secret, { alphabet: "base64url" }),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const data = new TextEncoder().encode("base");
  const mac = await crypto.subtle.sign("HMAC", mine, data);
  assert.ok(await crypto.subtle.verify("HMAC", sk!.key, mac, data));
});

Deno.test("keyring: only node keys verify JWTs, so an enrolled service key cannot mint admin tokens", async () => {
  using kv = await Deno.openKv(":memory:");
  const keys = createKeyring(kv);
  const nodeA = await generateNodeKey();
  const nodeB = await generateNodeKey();
  await keys.publishNode(nodeA, "a");
  // Node B trusts A's tokens through the keyring.
  const authB = createJwtAuthority(nodeB, {
    kv,
    resolveKey: (kid) => keys.nodeJwtKey(kid),
  });
  const fromA = await createJwtAuthority(nodeA).issue("ops", "operator");
  assert.equal((await authB.verify(fromA)).role, "operator");
  // A service key enrolled as viewer signs an admin token with its own kid.
  const svc = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const raw = new Uint8Array(
    await crypto.subtle.exportKey("raw", svc.publicKey),
  );
  await keys.enrol({
    alg: "ed25519",
    keyid: "svc",
    publicKey: raw.toBase64({ alphabet: "base64url", omitPadding: true }),
    sub: "svc",
    role: "viewer",
  }, "root");
  const now = Math.floor(Date.now() / 1000);
  const forged = await new SignJWT({ role: "admin" })
    .setProtectedHeader({ alg: "EdDSA", typ: "at+jwt", kid: "svc" })
    .setIssuer("plexus").setAudience("plexus-api").setSubject("svc")
    .setJti("x").setIssuedAt(now).setExpirationTime(now + 60)
    .sign(svc.privateKey);
  await assert.rejects(authB.verify(forged), /invalid or expired token/);
  assert.equal(await keys.nodeJwtKey("svc"), undefined);
  assert.ok(await keys.nodeJwtKey(nodeA.kid));
});

Deno.test("keyring: a removal reaches other nodes within cacheMs; odd ids find nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new ManualClock(0);
  const here = createKeyring(kv, { clock, cacheMs: 5000 });
  const there = createKeyring(kv, { clock, cacheMs: 5000 });
  await here.enrol(
    {
      alg: "ed25519",
      keyid: "k",
      publicKey: RFC8032_PK,
      sub: "s",
      role: "viewer",
    },
    "root",
  );
  assert.ok(await there.signatureKey("k"));
  assert.equal(await here.remove("k"), true);
  assert.equal(await here.signatureKey("k"), null, "gone here at once");
  assert.ok(await there.signatureKey("k"), "still cached there");
  await clock.advance(5001);
  assert.equal(await there.signatureKey("k"), null, "gone there after cacheMs");
  assert.equal(await here.remove("k"), false);
  for (
    const id of ["__proto__", "constructor", "../../etc/passwd", "", "a b"]
  ) {
    assert.equal(await here.signatureKey(id), null, id);
  }
  assert.equal((await kv.get(trustedKeyKey("k"))).versionstamp, null);
});
