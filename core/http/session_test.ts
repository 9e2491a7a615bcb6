import assert from "node:assert/strict";
import { ManualClock } from "../clock.ts";
import { generateNodeKey } from "../security/node_key.ts";
import { createJwtAuthority, JwtError } from "../security/jwt.ts";
import { createTestKernel } from "../testing.ts";
import { createSecurity } from "./security.ts";
import {
  createOperatorSessions,
  CSRF_HEADER,
  issueLoginLink,
  SESSION_COOKIE,
} from "./session.ts";

const cookiePair = (setCookie: string) => setCookie.split(";")[0];

Deno.test("session: the cookie is HttpOnly, Secure, SameSite=Lax and holds no stored value", async () => {
  using kv = await Deno.openKv(":memory:");
  const sessions = createOperatorSessions(kv);
  const { cookie } = await sessions.login({
    sub: "oidc:alice",
    role: "operator",
    method: "oidc",
  });
  const attrs = cookie.split(";").map((s) => s.trim());
  assert.ok(attrs[0].startsWith(`${SESSION_COOKIE}=`));
  for (const a of ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"]) {
    assert.ok(attrs.includes(a), `${a} in ${cookie}`);
  }
  const token = attrs[0].slice(SESSION_COOKIE.length + 1);
  // Only the hash is stored: the token appears in no key and no value.
  for await (const e of kv.list({ prefix: [] })) {
    assert.ok(!JSON.stringify(e.key).includes(token));
    assert.ok(!JSON.stringify(e.value).includes(token));
  }
});

Deno.test("session: a login rotates: the session the browser came with is revoked", async () => {
  using kv = await Deno.openKv(":memory:");
  const sessions = createOperatorSessions(kv);
  const first = await sessions.login({
    sub: "oidc:alice",
    role: "viewer",
    method: "oidc",
  });
  const old = cookiePair(first.cookie);
  const second = await sessions.login({
    sub: "oidc:alice",
    role: "viewer",
    method: "oidc",
    request: new Request("http://n/ui/auth/callback", {
      headers: { cookie: old },
    }),
  });
  assert.notEqual(cookiePair(second.cookie), old);
  const stale = await sessions.verify(
    new Request("http://n/api/v1/cluster", { headers: { cookie: old } }),
  );
  assert.ok(stale && !stale.ok && stale.failure.reason === "invalid");
  const fresh = await sessions.verify(
    new Request("http://n/api/v1/cluster", {
      headers: { cookie: cookiePair(second.cookie) },
    }),
  );
  assert.ok(fresh?.ok);
});

Deno.test("session: an expired session and a logged-out one are refused", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new ManualClock(1_000_000);
  const sessions = createOperatorSessions(kv, {
    clock,
    idleTtlMs: 60_000,
    maxLifetimeMs: 600_000,
  });
  const a = cookiePair(
    (await sessions.login({ sub: "u:a", role: "admin", method: "link" }))
      .cookie,
  );
  const req = (cookie: string) =>
    new Request("http://n/api/v1/cluster", { headers: { cookie } });
  assert.ok((await sessions.verify(req(a)))?.ok);
  await clock.advance(60_001);
  const expired = await sessions.verify(req(a));
  assert.ok(expired && !expired.ok && expired.failure.reason === "invalid");

  const b = cookiePair(
    (await sessions.login({ sub: "u:b", role: "admin", method: "link" }))
      .cookie,
  );
  const cleared = await sessions.logout(req(b));
  assert.match(cleared, /Max-Age=0/);
  const revoked = await sessions.verify(req(b));
  assert.ok(revoked && !revoked.ok && revoked.failure.reason === "invalid");
  assert.equal(await sessions.current(req(b)), null);
});

Deno.test("session: use slides the idle expiry, never past the absolute lifetime", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new ManualClock(1_000_000);
  const sessions = createOperatorSessions(kv, {
    clock,
    idleTtlMs: 120_000,
    maxLifetimeMs: 300_000,
  });
  const c = cookiePair(
    (await sessions.login({ sub: "u:a", role: "viewer", method: "link" }))
      .cookie,
  );
  const req = new Request("http://n/api/v1/cluster", {
    headers: { cookie: c },
  });
  for (let i = 0; i < 4; i++) {
    await clock.advance(90_000); // within the idle window each time
    const r = await sessions.verify(req);
    if (i < 3) assert.ok(r?.ok, `use ${i} at +${(i + 1) * 90}s`);
    else assert.ok(r && !r.ok, "past the 300 s absolute lifetime");
  }
});

Deno.test("session: a state-changing call needs the session's CSRF token; reads do not", async () => {
  using kv = await Deno.openKv(":memory:");
  const sessions = createOperatorSessions(kv);
  const { cookie, session } = await sessions.login({
    sub: "u:a",
    role: "admin",
    method: "link",
  });
  const c = cookiePair(cookie);
  const call = (method: string, csrf?: string) =>
    sessions.verify(
      new Request("http://n/api/v1/tasks", {
        method,
        headers: csrf === undefined
          ? { cookie: c }
          : { cookie: c, [CSRF_HEADER]: csrf },
      }),
    );
  assert.ok((await call("GET"))?.ok);
  for (const method of ["POST", "PUT", "PATCH", "DELETE"]) {
    const none = await call(method);
    assert.ok(none && !none.ok && none.failure.reason === "csrf", method);
    const wrong = await call(method, session.csrf.slice(1) + "x");
    assert.ok(wrong && !wrong.ok && wrong.failure.reason === "csrf", method);
    assert.ok((await call(method, session.csrf))?.ok, method);
  }
  // No cookie: not a session request at all (other methods apply).
  assert.equal(
    await sessions.verify(new Request("http://n/api/v1/tasks")),
    null,
  );
  const junk = await sessions.verify(
    new Request("http://n/", { headers: { cookie: `${SESSION_COOKIE}=%%` } }),
  );
  assert.ok(junk && !junk.ok && junk.failure.reason === "malformed");
});

Deno.test("session: a login link works once, expires, and is no API token", async () => {
  using kv = await Deno.openKv(":memory:");
  const nodeKey = await generateNodeKey();
  const sessions = createOperatorSessions(kv, { nodeKey });
  const link = await issueLoginLink(nodeKey, { ttlMs: 60_000 });
  assert.deepEqual(await sessions.redeemLink(link), {
    sub: "login-link",
    role: "admin",
  });
  await assert.rejects(sessions.redeemLink(link), JwtError);
  // Another node's key, or an API token, is not a login link.
  const other = await issueLoginLink(await generateNodeKey());
  await assert.rejects(sessions.redeemLink(other), JwtError);
  const api = await createJwtAuthority(nodeKey).issue("ci", "admin");
  await assert.rejects(sessions.redeemLink(api), JwtError);
  // And a login link is no API token.
  await assert.rejects(createJwtAuthority(nodeKey, { kv }).verify(link));
  const expired = await issueLoginLink(nodeKey, { ttlMs: 1000 });
  const late = createOperatorSessions(kv, {
    nodeKey,
    clock: new ManualClock(Date.now() + 120_000),
  });
  await assert.rejects(late.redeemLink(expired), JwtError);
});

Deno.test("session: /api/v1 takes the cookie as a third method: 401 bad session, 403 CSRF or role", async () => {
  await using t = await createTestKernel([]);
  const sessions = t.security.sessions;
  const viewer = await sessions.login({
    sub: "oidc:v",
    role: "viewer",
    method: "oidc",
  });
  const vc = cookiePair(viewer.cookie);
  const ok = await t.request("/api/v1/cluster", { headers: { cookie: vc } });
  assert.equal(ok.status, 200);
  const who = await t.request("/api/v1/auth/whoami", {
    headers: { cookie: vc },
  });
  assert.equal((await who.json()).via, "session");
  const noCsrf = await t.request("/api/v1/tasks", {
    method: "POST",
    headers: { cookie: vc, "content-type": "application/json" },
    body: JSON.stringify({ type: "x" }),
  });
  assert.equal(noCsrf.status, 403);
  assert.equal((await noCsrf.json()).error.code, "csrf");
  const viewerWrites = await t.request("/api/v1/tasks", {
    method: "POST",
    headers: {
      cookie: vc,
      [CSRF_HEADER]: viewer.session.csrf,
      "content-type": "application/json",
    },
    body: JSON.stringify({ type: "x" }),
  });
  assert.equal(viewerWrites.status, 403);
  assert.match((await viewerWrites.json()).error.message, /role 'viewer'/);
  await sessions.logout(
    new Request("http://n/", { headers: { cookie: vc } }),
  );
  const gone = await t.request("/api/v1/cluster", { headers: { cookie: vc } });
  assert.equal(gone.status, 401);
  // Bearer tokens keep working beside sessions.
  const bearer = await t.request("/api/v1/cluster", {
    headers: { authorization: `Bearer ${await t.token("viewer")}` },
  });
  assert.equal(bearer.status, 200);
});

Deno.test("session: the node's auth.sessionIdleMs and auth.sessionMaxMs set the lifetimes", async () => {
  using kv = await Deno.openKv(":memory:");
  const sec = createSecurity({
    kv,
    nodeKey: await generateNodeKey(),
    auth: { sessionIdleMs: 90_000, sessionMaxMs: 120_000 },
  });
  const { cookie, session } = await sec.sessions.login({
    sub: "u:a",
    role: "viewer",
    method: "link",
  });
  assert.match(cookie, /Max-Age=120(;|$)/);
  const left = session.expiresAt - Date.now();
  assert.ok(left > 80_000 && left <= 90_000, `idle expiry in ${left} ms`);
});
