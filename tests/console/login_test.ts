/**
 * Dashboard sign-in against a real OpenID provider (npm `oidc-provider` on
 * loopback): the happy path and each attack the flow must refuse.
 */
import assert from "node:assert/strict";
import { createTestKernel, type TestKernel } from "../../core/testing.ts";
import dashboard from "../../plugins/dashboard/mod.ts";
import { CSRF_HEADER, issueLoginLink } from "../../core/http/session.ts";
import { definePlugin } from "../../core/plugin.ts";
import { type Idp, startIdp } from "./_idp.ts";

const CALLBACK = "http://localhost/ui/auth/callback";

/** A browser's part on the provider's side: its cookies and the sign-in form. */
async function throughIdp(authorize: URL, account: string): Promise<URL> {
  const jar = new Map<string, string>();
  let url = authorize;
  let init: RequestInit = {};
  for (let hop = 0; hop < 12; hop++) {
    const res = await fetch(url, {
      ...init,
      redirect: "manual",
      headers: {
        ...(init.headers as Record<string, string> ?? {}),
        cookie: [...jar].map(([k, v]) => `${k}=${v}`).join("; "),
      },
    });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(";");
      const i = pair.indexOf("=");
      jar.set(pair.slice(0, i), pair.slice(i + 1));
    }
    const location = res.headers.get("location");
    if (res.status >= 300 && res.status < 400 && location) {
      await res.body?.cancel();
      const next = new URL(location, url);
      if (next.href.startsWith(CALLBACK)) return next;
      url = next;
      init = {};
      continue;
    }
    const body = await res.text();
    const action = /action="([^"]+)"/.exec(body)?.[1];
    assert.ok(
      res.ok && action,
      `the provider answered ${res.status}: ${body.slice(0, 300)}`,
    );
    url = new URL(action, url);
    init = {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ login: account }).toString(),
    };
  }
  throw new Error("too many hops at the provider");
}

/** The browser binding cookie of each attempt, by its state. */
const bindings = new Map<string, string>();

async function start(t: TestKernel): Promise<URL> {
  const res = await t.request("/ui/auth/start");
  assert.equal(res.status, 302);
  const url = new URL(res.headers.get("location")!);
  const binding = res.headers.getSetCookie().find((c) =>
    c.startsWith("plexus_login=")
  );
  assert.match(binding!, /HttpOnly; Secure; SameSite=Lax/);
  bindings.set(url.searchParams.get("state")!, binding!.split(";")[0]);
  return url;
}

/** The provider sends the browser back: with the attempt's binding cookie when it has one. */
function back(t: TestKernel, callback: URL): Promise<Response> {
  const cookie = bindings.get(callback.searchParams.get("state") ?? "");
  return t.request(callback.href, cookie ? { headers: { cookie } } : {});
}

/** The session cookie a response sets (`name=value`), if any. */
const cookieOf = (res: Response) =>
  res.headers.getSetCookie().find((c) => /^plexus_session=[^;]/.test(c))
    ?.split(";")[0];

/** A plugin loaded from a file in real deployments; here one reloadable by name. */
const hello = definePlugin({
  manifest: {
    name: "hello",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:hello"],
  },
  setup: () => Promise.resolve({ stop: () => Promise.resolve() }),
});

async function setup(): Promise<{ idp: Idp; t: TestKernel }> {
  const idp = await startIdp({
    redirectUris: [CALLBACK],
    groups: {
      alice: ["plexus-admins", "staff"],
      olga: ["plexus-operators"],
      vera: ["plexus-viewers"],
      victor: ["staff"],
    },
  });
  const t = await createTestKernel([dashboard, hello], {
    pluginConfig: {
      dashboard: {
        provider: {
          issuer: idp.issuer,
          clientId: idp.clientId,
          clientSecret: idp.clientSecret,
          scopes: ["openid", "profile", "email", "groups"],
          roles: {
            "plexus-admins": "admin",
            "plexus-operators": "operator",
            "plexus-viewers": "viewer",
          },
          allowHttp: true,
        },
      },
    },
  });
  return { idp, t };
}

Deno.test("console login: a person signs in through the OpenID provider and gets the role their groups map to", async () => {
  const { idp, t } = await setup();
  await using _idp = idp;
  await using _t = t;
  const authorize = await start(t);
  assert.equal(authorize.origin, idp.issuer);
  assert.equal(authorize.searchParams.get("code_challenge_method"), "S256");
  assert.ok(authorize.searchParams.get("nonce"));
  const callback = await throughIdp(authorize, "alice");
  const done = await back(t, callback);
  assert.equal(done.status, 302);
  assert.equal(done.headers.get("location"), "/ui/");
  const setCookie = done.headers.getSetCookie().find((c) =>
    c.startsWith("plexus_session=")
  )!;
  assert.match(setCookie, /HttpOnly/);
  assert.match(setCookie, /Secure/);
  assert.match(setCookie, /SameSite=Lax/);
  const cookie = cookieOf(done)!;
  const session = await (await t.request("/ui/session", {
    headers: { cookie },
  })).json();
  assert.equal(session.sub, "oidc:alice");
  assert.equal(session.role, "admin");
  const page = await t.request("/", { headers: { cookie } });
  assert.equal(page.status, 200);
  assert.match(await page.clone().text(), /src="\/ui\/app\.js"/);
  assert.match(
    page.headers.get("content-security-policy")!,
    /script-src 'self'/,
  );
  // The admin acts through the API with the cookie and the CSRF token.
  const plugins = await t.request("/api/v1/plugins", { headers: { cookie } });
  assert.deepEqual(
    (await plugins.json()).map((p: { name: string }) => p.name).sort(),
    ["dashboard", "hello"],
  );
  const revoke = await t.request("/api/v1/auth/revoke", {
    method: "POST",
    headers: {
      cookie,
      [CSRF_HEADER]: session.csrf,
      "content-type": "application/json",
    },
    body: JSON.stringify({ jti: "some-token", exp: 4_000_000_000 }),
  });
  assert.equal(revoke.status, 200);
  // Logout revokes the session.
  const out = await t.request("/ui/auth/logout", {
    method: "POST",
    headers: { cookie, [CSRF_HEADER]: session.csrf },
  });
  assert.equal(out.status, 200);
  assert.match(out.headers.get("set-cookie")!, /Max-Age=0/);
  const after = await t.request("/api/v1/cluster", { headers: { cookie } });
  assert.equal(after.status, 401);
  // Signed out, the console's address shows the sign-in page.
  for (const path of ["/", "/ui/"]) {
    const home = await t.request(path, { headers: { cookie } });
    assert.equal(home.status, 200);
    const text = await home.text();
    assert.match(text, /id="sign-in"/);
    assert.doesNotMatch(text, /app\.js/);
  }
});

Deno.test("console login: tampered state, tampered nonce, PKCE mismatch and a replayed code are refused", async () => {
  const { idp, t } = await setup();
  await using _idp = idp;
  await using _t = t;

  // A state that is not ours: no attempt to take.
  const a = await throughIdp(await start(t), "alice");
  a.searchParams.set("state", "forged-" + a.searchParams.get("state"));
  const forged = await back(t, a);
  assert.equal(forged.status, 400);
  assert.equal(cookieOf(forged), undefined);
  assert.match(await forged.text(), /unknown, used or expired login attempt/);

  // A nonce changed on the way to the provider: the ID token carries it.
  const n = await start(t);
  n.searchParams.set("nonce", "attacker-nonce");
  const badNonce = await back(t, await throughIdp(n, "alice"));
  assert.equal(badNonce.status, 401);
  assert.equal(cookieOf(badNonce), undefined);
  assert.match(await badNonce.text(), /nonce/);

  // A code_challenge that is not the verifier's: the provider refuses the code.
  const p = await start(t);
  p.searchParams.set(
    "code_challenge",
    "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
  );
  const badPkce = await back(t, await throughIdp(p, "alice"));
  assert.equal(badPkce.status, 401);
  assert.equal(cookieOf(badPkce), undefined);
  assert.match(await badPkce.text(), /code exchange failed/);

  // A replayed callback: the attempt is gone after the first use.
  const ok = await throughIdp(await start(t), "alice");
  assert.equal((await back(t, ok)).status, 302);
  const replay = await back(t, ok);
  assert.equal(replay.status, 400);
  assert.equal(cookieOf(replay), undefined);
  // And the used code under a fresh attempt's state: the provider refuses it.
  const fresh = await start(t);
  const reused = new URL(ok);
  reused.searchParams.set("state", fresh.searchParams.get("state")!);
  const codeAgain = await back(t, reused);
  assert.equal(codeAgain.status, 401);
  assert.equal(cookieOf(codeAgain), undefined);
});

Deno.test("console login: a callback finished in another browser (no binding cookie) is refused, and spends the attempt", async () => {
  const { idp, t } = await setup();
  await using _idp = idp;
  await using _t = t;
  // An attacker starts a login, signs in as themself, and hands the
  // callback URL to a victim: the victim's browser has no binding cookie.
  const handed = await throughIdp(await start(t), "alice");
  const victim = await t.request(handed.href);
  assert.equal(victim.status, 400);
  assert.match(await victim.text(), /started in another browser/);
  assert.equal(cookieOf(victim), undefined);
  // A wrong binding is refused the same way.
  const other = await throughIdp(await start(t), "alice");
  const wrong = await t.request(other.href, {
    headers: { cookie: "plexus_login=not-the-binding" },
  });
  assert.equal(wrong.status, 400);
  assert.equal(cookieOf(wrong), undefined);
  // The attempt is gone: even the right browser cannot use it now.
  const late = await back(t, handed);
  assert.equal(late.status, 400);
  assert.match(await late.text(), /unknown, used or expired/);
});

Deno.test("console login: no mapped role is refused; a viewer's session cannot act as admin; CSRF is required", async () => {
  const { idp, t } = await setup();
  await using _idp = idp;
  await using _t = t;
  const refused = await back(t, await throughIdp(await start(t), "victor"));
  assert.equal(refused.status, 403);
  assert.match(await refused.text(), /has no Plexus role/);
  assert.equal(cookieOf(refused), undefined);

  // An operator may read and send, but not administer the node (admin).
  const done = await back(t, await throughIdp(await start(t), "olga"));
  const cookie = cookieOf(done)!;
  const { csrf, role } = await (await t.request("/ui/session", {
    headers: { cookie },
  })).json();
  assert.equal(role, "operator");
  const revoke = (headers: Record<string, string>) =>
    t.request("/api/v1/auth/revoke", {
      method: "POST",
      headers: { ...headers, "content-type": "application/json" },
      body: JSON.stringify({ jti: "some-token", exp: 4_000_000_000 }),
    });
  const noCsrf = await revoke({ cookie });
  assert.equal(noCsrf.status, 403);
  assert.equal((await noCsrf.json()).error.code, "csrf");
  const notAdmin = await revoke({ cookie, [CSRF_HEADER]: csrf });
  assert.equal(notAdmin.status, 403);
  assert.match(
    (await notAdmin.json()).error.message,
    /lacks permission 'admin'/,
  );
  // A viewer's session reads, but neither writes nor administers.
  const viewer = cookieOf(
    await back(t, await throughIdp(await start(t), "vera")),
  )!;
  const vs = await (await t.request("/ui/session", {
    headers: { cookie: viewer },
  })).json();
  assert.equal(vs.role, "viewer");
  assert.equal(
    (await t.request("/api/v1/cluster", { headers: { cookie: viewer } }))
      .status,
    200,
  );
  const viewerAdmin = await revoke({ cookie: viewer, [CSRF_HEADER]: vs.csrf });
  assert.equal(viewerAdmin.status, 403);
  assert.match((await viewerAdmin.json()).error.message, /role 'viewer'/);
  const noCsrfLogout = await t.request("/ui/auth/logout", {
    method: "POST",
    headers: { cookie },
  });
  assert.equal(noCsrfLogout.status, 403);
  assert.equal(
    (await t.request("/api/v1/cluster", { headers: { cookie } })).status,
    200,
    "a logout without the CSRF token does not end the session",
  );
});

Deno.test("console login: one-time links are off when a provider is configured", async () => {
  const { idp, t } = await setup();
  await using _idp = idp;
  await using _t = t;
  const res = await t.request("/ui/auth/link?token=whatever");
  assert.equal(res.status, 403);
});

Deno.test("console login: a plain OAuth 2 provider (GitHub style: endpoints given, the user from a JSON endpoint) works too", async () => {
  const idp = await startIdp({
    redirectUris: [CALLBACK],
    groups: { olga: ["plexus-operators"] },
  });
  await using _idp = idp;
  await using t = await createTestKernel([dashboard], {
    pluginConfig: {
      dashboard: {
        provider: {
          type: "oauth2",
          issuer: idp.issuer,
          authorizationEndpoint: `${idp.issuer}/auth`,
          tokenEndpoint: `${idp.issuer}/token`,
          userEndpoint: `${idp.issuer}/me`,
          clientId: idp.clientId,
          clientSecret: idp.clientSecret,
          scopes: ["openid", "groups"],
          roles: { "plexus-operators": "operator" },
          allowHttp: true,
        },
      },
    },
  });
  const authorize = await start(t);
  assert.equal(authorize.searchParams.get("nonce"), null);
  const done = await back(t, await throughIdp(authorize, "olga"));
  assert.equal(done.status, 302);
  const s = await (await t.request("/ui/session", {
    headers: { cookie: cookieOf(done)! },
  })).json();
  assert.equal(s.sub, "oauth2:olga");
  assert.equal(s.role, "operator");
});

Deno.test("console login: without a provider, a one-time link from `plexus login-link` signs an admin in once", async () => {
  await using t = await createTestKernel([dashboard]);
  const login = await t.request("/ui/login");
  assert.match(await login.text(), /login-link/);
  const token = await issueLoginLink(t.security.nodeKey, { ttlMs: 60_000 });
  const first = await t.request(`/ui/auth/link?token=${token}`);
  assert.equal(first.status, 302);
  const cookie = cookieOf(first)!;
  const s = await (await t.request("/ui/session", { headers: { cookie } }))
    .json();
  assert.equal(s.role, "admin");
  const again = await t.request(`/ui/auth/link?token=${token}`);
  assert.equal(again.status, 401);
  assert.equal(cookieOf(again), undefined);
  // A link is not an API token.
  const api = await t.request("/api/v1/cluster", {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(api.status, 401);
  // No session: the sign-in page, not the console; no session data.
  assert.doesNotMatch(await (await t.request("/ui/")).text(), /app\.js/);
  assert.equal((await t.request("/ui/session")).status, 401);
});

Deno.test("console login: sign-in routes are behind the per-IP rate limit", async () => {
  const idp = await startIdp({ redirectUris: [CALLBACK], groups: {} });
  await using _idp = idp;
  await using t = await createTestKernel([dashboard], {
    rateLimit: { ip: { rate: 1, periodMs: 60_000, burst: 3 } },
    pluginConfig: {
      dashboard: {
        provider: {
          issuer: idp.issuer,
          clientId: idp.clientId,
          clientSecret: idp.clientSecret,
          allowHttp: true,
        },
      },
    },
  });
  const statuses: number[] = [];
  for (let i = 0; i < 4; i++) {
    // From one client address (what the listener hands the app).
    const res = await t.app.fetch(
      new Request("http://localhost/ui/auth/start"),
      { remoteAddr: { hostname: "203.0.113.9" } },
    );
    await res.body?.cancel();
    statuses.push(res.status);
  }
  assert.deepEqual(statuses, [302, 302, 302, 429]);
  // The page itself is not limited by sign-in attempts.
  assert.equal((await t.request("/ui/login")).status, 200);
});

Deno.test("console login: an admin lists and revokes another person's sessions; they end at once", async () => {
  const { idp, t } = await setup();
  await using _idp = idp;
  await using _t = t;
  const olga = cookieOf(
    await back(t, await throughIdp(await start(t), "olga")),
  )!;
  const alice = cookieOf(
    await back(t, await throughIdp(await start(t), "alice")),
  )!;
  const csrf = async (cookie: string) =>
    (await (await t.request("/ui/session", { headers: { cookie } })).json())
      .csrf;
  const revoke = async (cookie: string, sub: string) =>
    await t.request("/api/v1/console/sessions/revoke", {
      method: "POST",
      headers: {
        cookie,
        [CSRF_HEADER]: await csrf(cookie),
        "content-type": "application/json",
      },
      body: JSON.stringify({ sub }),
    });
  // Not for operators.
  assert.equal((await revoke(olga, "oidc:alice")).status, 403);
  const listed = await (await t.request(
    "/api/v1/console/sessions?sub=oidc:olga",
    { headers: { cookie: alice } },
  )).json();
  assert.equal(listed.length, 1);
  assert.equal(listed[0].role, "operator");
  assert.equal(listed[0].id.length, 12);
  assert.equal("csrf" in listed[0], false);
  const r = await revoke(alice, "oidc:olga");
  assert.equal(r.status, 200);
  assert.deepEqual(await r.json(), { revoked: 1 });
  assert.equal(
    (await t.request("/api/v1/cluster", { headers: { cookie: olga } })).status,
    401,
  );
  assert.equal(
    (await t.request("/api/v1/cluster", { headers: { cookie: alice } })).status,
    200,
  );
});
