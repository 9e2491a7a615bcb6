import assert from "node:assert/strict";
import { createTestKernel } from "../testing.ts";
import {
  signRequest,
  verifyResponse,
} from "../security/http_signatures/mod.ts";
import { AUTH_CHALLENGE, AUTH_FAILED_MESSAGE } from "./auth.ts";

const json = (body: unknown): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify(body),
});

Deno.test("security: every /api/v1 route refuses anonymous calls with the one 401", async () => {
  await using t = await createTestKernel([]);
  const routes: [string, string][] = [
    ["GET", "/api/v1/plugins"],
    ["GET", "/api/v1/cluster"],
    ["POST", "/api/v1/tasks"],
    ["GET", "/api/v1/tasks/x"],
    ["GET", "/api/v1/auth/whoami"],
    ["POST", "/api/v1/auth/revoke"],
    ["GET", "/api/v1/keys"],
    ["POST", "/api/v1/keys"],
    ["DELETE", "/api/v1/keys/x"],
    ["GET", "/api/v1/audit"],
    ["GET", "/api/v1/no-such-route"],
  ];
  for (const [method, path] of routes) {
    const res = await t.request(path, {
      method,
      body: method === "GET" ? undefined : "{}",
    });
    assert.equal(res.status, 401, `${method} ${path}`);
    assert.equal(res.headers.get("www-authenticate"), AUTH_CHALLENGE);
    assert.deepEqual(await res.json(), {
      error: { code: "unauthorized", message: AUTH_FAILED_MESSAGE },
    });
  }
});

Deno.test("security: the permission table is enforced per route (403 below the needed role)", async () => {
  await using t = await createTestKernel([]);
  // [method, path, body, lowest role allowed]
  const cases: [string, string, unknown, string][] = [
    ["GET", "/api/v1/plugins", undefined, "viewer"],
    ["GET", "/api/v1/cluster", undefined, "viewer"],
    ["GET", "/api/v1/auth/whoami", undefined, "viewer"],
    ["POST", "/api/v1/tasks", { type: "echo" }, "analyst"],
    ["GET", "/api/v1/keys", undefined, "admin"],
    ["GET", "/api/v1/audit", undefined, "admin"],
  ];
  const order = ["viewer", "analyst", "operator", "admin"] as const;
  for (const [method, path, body, lowest] of cases) {
    for (const role of order) {
      const init = body === undefined ? { method } : json(body);
      const res = await t.api(path, init, role);
      const allowed = order.indexOf(role) >= order.indexOf(lowest as never);
      assert.equal(
        res.status < 400,
        allowed,
        `${role} ${method} ${path}: ${res.status} ${await res.text()}`,
      );
      if (!allowed) assert.equal(res.status, 403);
    }
  }
});

Deno.test("security: admins enrol, list and remove keys; a signed request acts as the key's subject", async () => {
  await using t = await createTestKernel([]);
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const raw = new Uint8Array(
    await crypto.subtle.exportKey("raw", pair.publicKey),
  );
  const enrol = await t.api(
    "/api/v1/keys",
    json({
      keyid: "deployer",
      alg: "ed25519",
      publicKey: raw.toBase64({ alphabet: "base64url", omitPadding: true }),
      sub: "deploy-bot",
      role: "analyst",
    }),
  );
  assert.equal(enrol.status, 201, await enrol.clone().text());
  const enrolled = await enrol.json();
  assert.equal(enrolled.keyid, "deployer");
  assert.match(enrolled.agentDid, /^did:key:z6Mk/);
  const dup = await t.api(
    "/api/v1/keys",
    json({ keyid: "deployer", alg: "hmac-sha256", sub: "x", role: "admin" }),
  );
  assert.equal(dup.status, 409);

  const key = {
    keyid: "deployer",
    alg: "ed25519" as const,
    key: pair.privateKey,
  };
  const signed = await signRequest(
    new Request("http://localhost/api/v1/auth/whoami", {
      headers: { "accept-signature": 'sig1=("@status")' },
    }),
    { key },
  );
  const who = await t.app.request(signed);
  assert.equal(who.status, 200);
  const body = await who.clone().json();
  assert.deepEqual(
    [body.sub, body.role, body.via, body.keyid],
    ["deploy-bot", "analyst", "signature", "deployer"],
  );
  assert.equal(body.sageVerification.verified, true);
  assert.equal(body.sageVerification.signatureValid, true);
  assert.equal(body.sageVerification.agentDid, enrolled.agentDid);
  assert.match(
    who.headers.get("signature-verification")!,
    /^verified=\?1, signatureValid=\?1, agentDid="did:key:z6Mk[^"]+", timestamp="/,
  );
  // The response is signed with the node key, bound to the request.
  const nodeKey = t.security.nodeKey;
  const checked = await verifyResponse(who, {
    request: signed,
    requiredComponents: [
      "@status",
      "content-digest",
      '"@method";req',
      '"@path";req',
    ],
    resolveKey: (id) =>
      id === nodeKey.kid
        ? { keyid: id, alg: "ed25519", key: nodeKey.publicKey }
        : null,
  });
  assert.equal(checked.verified, true, JSON.stringify(checked));

  // The analyst key may submit tasks, not manage keys.
  const listed = await t.app.request(
    await signRequest(new Request("http://localhost/api/v1/keys"), { key }),
  );
  assert.equal(listed.status, 403);

  const keys = await (await t.api("/api/v1/keys")).json();
  assert.deepEqual(
    keys.map((k: { keyid: string; kind: string }) => [k.keyid, k.kind]).sort(),
    [["deployer", "service"], [nodeKey.kid, "node"]].sort(),
  );
  assert.equal(
    (await t.api("/api/v1/keys/deployer", { method: "DELETE" })).status,
    204,
  );
  assert.equal(
    (await t.api("/api/v1/keys/deployer", { method: "DELETE" })).status,
    404,
  );
  assert.equal(
    (await t.api(`/api/v1/keys/${nodeKey.kid}`, { method: "DELETE" })).status,
    409,
  );
  const after = await t.app.request(
    await signRequest(new Request("http://localhost/api/v1/auth/whoami"), {
      key,
    }),
  );
  assert.equal(after.status, 401, "a removed key no longer authenticates");
});

Deno.test("security: revocation by token or by jti ends a token at once", async () => {
  await using t = await createTestKernel([]);
  const victim = await t.security.jwt.issue("ops", "operator", { ttl: "1h" });
  const whoami = (token: string) =>
    t.request("/api/v1/auth/whoami", {
      headers: { authorization: `Bearer ${token}` },
    });
  assert.equal((await whoami(victim)).status, 200);
  const byOperator = await t.api(
    "/api/v1/auth/revoke",
    json({ token: victim }),
    "operator",
  );
  assert.equal(byOperator.status, 403);
  const revoked = await t.api("/api/v1/auth/revoke", json({ token: victim }));
  assert.equal(revoked.status, 200);
  assert.equal((await whoami(victim)).status, 401);
  assert.equal(
    (await t.api("/api/v1/auth/revoke", json({ token: victim }))).status,
    400,
    "revoking an unusable token",
  );

  const second = await t.security.jwt.issue("ops2", "viewer", { ttl: "1h" });
  const { jti, exp } = await t.security.jwt.verify(second);
  const byJti = await t.api("/api/v1/auth/revoke", json({ jti, exp }));
  assert.equal(byJti.status, 200);
  assert.deepEqual(await byJti.json(), { revoked: jti, until: exp });
  assert.equal((await whoami(second)).status, 401);
  const bad = await t.api("/api/v1/auth/revoke", json({ jti, exp: "soon" }));
  assert.equal(bad.status, 400);
});

Deno.test("security: /api/v1/audit lists mutating calls with principal and outcome", async () => {
  await using t = await createTestKernel([]);
  await t.api("/api/v1/tasks", json({ type: "echo" }), "analyst");
  await t.api("/api/v1/tasks", json({ type: "echo" }), "viewer");
  const res = await t.api("/api/v1/audit?limit=10");
  assert.equal(res.status, 200);
  const records = await res.json();
  assert.deepEqual(
    records.map((
      r: { status: number; outcome: string },
    ) => [r.status, r.outcome]),
    [[202, "ok"], [403, "denied"]],
  );
  assert.equal((await t.api("/api/v1/audit?limit=0")).status, 400);
  assert.equal((await t.api("/api/v1/audit?since=abc")).status, 400);
});
