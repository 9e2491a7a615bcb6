import assert from "node:assert/strict";
import { base64url, jwtVerify, SignJWT } from "jose";
import {
  createJwtAuthority,
  INVALID_TOKEN_MESSAGE,
  type JwtAuthority,
  type JwtAuthorityOptions,
  JwtError,
  MAX_CLOCK_TOLERANCE_S,
  TOKEN_TYPE,
} from "./jwt.ts";
import { generateNodeKey, type NodeKey } from "./node_key.ts";
import { can } from "./roles.ts";
import { REVOCATIONS_KEY, revokedJtiKey } from "../state/keys.ts";

/** A fixed wall clock (ms) that tests move by hand. */
const T0 = 1_900_000_000_000;
const T0_S = T0 / 1000;

interface Setup {
  key: NodeKey;
  kv: Deno.Kv;
  clock: { t: number; now(): number };
  auth: JwtAuthority;
  /** Another authority over the same key and KV, with other options. */
  with(options: JwtAuthorityOptions): JwtAuthority;
}

async function withAuth(
  fn: (s: Setup) => Promise<void>,
  options: JwtAuthorityOptions = {},
): Promise<void> {
  const key = await generateNodeKey();
  const kv = await Deno.openKv(":memory:");
  const clock = {
    t: T0,
    now() {
      return this.t;
    },
  };
  const make = (o: JwtAuthorityOptions) =>
    createJwtAuthority(key, { kv, clock, clockToleranceS: 30, ...o });
  try {
    await fn({ key, kv, clock, auth: make(options), with: make });
  } finally {
    kv.close();
  }
}

/** A full, valid claim set at T0 (seconds). */
function claims(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    iss: "plexus",
    aud: "plexus-api",
    sub: "tester",
    role: "viewer",
    jti: crypto.randomUUID(),
    iat: T0_S,
    exp: T0_S + 600,
    ...extra,
  };
}

/** Signs any header and payload with the node key (a valid signature). */
function signWithNodeKey(
  key: NodeKey,
  payload: Record<string, unknown>,
  header: Record<string, unknown> = {},
): Promise<string> {
  return new SignJWT(payload)
    .setProtectedHeader({
      alg: "EdDSA",
      typ: TOKEN_TYPE,
      kid: key.kid,
      ...header,
    })
    .sign(key.privateKey);
}

function encodePart(value: unknown): string {
  return base64url.encode(JSON.stringify(value));
}

/** Asserts `token` is refused with the uniform message and a reason matching `reason`. */
async function refused(
  auth: JwtAuthority,
  token: string,
  reason?: RegExp,
): Promise<JwtError> {
  let caught: unknown;
  try {
    await auth.verify(token);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof JwtError, `expected a JwtError, got ${caught}`);
  assert.equal(caught.message, INVALID_TOKEN_MESSAGE);
  if (reason) assert.match(caught.reason, reason);
  return caught;
}

/** A KV stand-in that records every call and answers "not revoked". */
function spyKv(): { kv: Deno.Kv; calls: string[] } {
  const calls: string[] = [];
  const kv = new Proxy({}, {
    get(_, prop) {
      return (...args: unknown[]) => {
        calls.push(`${String(prop)}(${JSON.stringify(args[0])})`);
        if (prop === "get") {
          return Promise.resolve({
            key: args[0],
            value: null,
            versionstamp: null,
          });
        }
        return Promise.reject(new Error(`unexpected KV call ${String(prop)}`));
      };
    },
  }) as unknown as Deno.Kv;
  return { kv, calls };
}

Deno.test("jwt: a token it issued verifies and carries sub, role, jti, iat and exp", () =>
  withAuth(async ({ auth, key }) => {
    const token = await auth.issue("ci", "operator", {
      ttl: "1h",
      jti: "job-1",
    });
    const header = JSON.parse(
      new TextDecoder().decode(base64url.decode(token.split(".")[0])),
    );
    assert.deepEqual(header, { alg: "EdDSA", typ: "at+jwt", kid: key.kid });
    const verified = await auth.verify(token);
    assert.deepEqual({ ...verified }, {
      sub: "ci",
      role: "operator",
      jti: "job-1",
      iat: T0_S,
      exp: T0_S + 3600,
      iss: "plexus",
      kid: key.kid,
      alg: "EdDSA",
    });
    const auto = await auth.verify(await auth.issue("ci", "viewer"));
    assert.match(auto.jti, /^[0-9a-f-]{36}$/, "jti is made when not given");
    assert.equal(auto.exp - auto.iat, 15 * 60, "default ttl is 15 minutes");
  }));

Deno.test("jwt: alg none is refused, with or without a signature part", () =>
  withAuth(async ({ auth, key }) => {
    const payload = encodePart(claims());
    const real = (await auth.issue("tester", "viewer")).split(".")[2];
    for (const alg of ["none", "None", "NONE", "nOnE"]) {
      for (const kid of [key.kid, undefined]) {
        const head = encodePart({ alg, typ: TOKEN_TYPE, kid });
        await refused(
          auth,
          `${head}.${payload}.`,
          /ALG_NOT_ALLOWED|JWS_INVALID/,
        );
        await refused(auth, `${head}.${payload}.${real}`, /ALG_NOT_ALLOWED/);
      }
    }
    await refused(
      auth,
      `${encodePart({ typ: TOKEN_TYPE })}.${payload}.${real}`,
    );
  }));

Deno.test("jwt: HS256 signed with the node's public key bytes is refused (key confusion)", () =>
  withAuth(async ({ auth, key, with: make }) => {
    const shared = make({
      sharedSecret: { secret: crypto.getRandomValues(new Uint8Array(32)) },
    });
    const pub = key.publicJwk;
    const secrets = [
      base64url.decode(pub.x), // the raw 32-byte public key
      new TextEncoder().encode(pub.x),
      new TextEncoder().encode(JSON.stringify(pub)),
      new Uint8Array(await crypto.subtle.exportKey("spki", key.publicKey)),
    ];
    for (const hmacKey of secrets) {
      for (const kid of [key.kid, undefined, "plexus-shared"]) {
        const forged = await new SignJWT(claims({ role: "admin" }))
          .setProtectedHeader({ alg: "HS256", typ: TOKEN_TYPE, kid })
          .sign(hmacKey);
        // The forgery is a real HS256 token: a verifier that took the
        // algorithm from the token would accept it.
        await jwtVerify(forged, hmacKey, { currentDate: new Date(T0) });
        await refused(
          auth,
          forged,
          kid === "plexus-shared" ? /unknown kid/ : /ALG_NOT_ALLOWED/,
        );
        // With a shared secret configured, the node's kid still pins EdDSA
        // and the shared kid needs the real secret.
        await refused(
          shared,
          forged,
          kid === "plexus-shared"
            ? /SIGNATURE_VERIFICATION_FAILED/
            : /ALG_NOT_ALLOWED/,
        );
      }
    }
  }));

Deno.test("jwt: with a shared secret, HS256 verifies under its kid only", () =>
  withAuth(async ({ auth, key, with: make }) => {
    const secret = crypto.getRandomValues(new Uint8Array(32));
    const shared = make({ sharedSecret: { secret, kid: "ci-secret" } });
    const sign = (kid: string | undefined) =>
      new SignJWT(claims({ role: "analyst" }))
        .setProtectedHeader({ alg: "HS256", typ: TOKEN_TYPE, kid })
        .sign(secret);
    const ok = await shared.verify(await sign("ci-secret"));
    assert.equal(ok.role, "analyst");
    assert.equal(ok.alg, "HS256");
    await refused(auth, await sign("ci-secret"), /unknown kid/);
    await refused(shared, await sign(undefined), /ALG_NOT_ALLOWED/);
    await refused(shared, await sign(key.kid), /ALG_NOT_ALLOWED/);
    // An EdDSA token under the shared kid is refused too: the kid pins HS256.
    await refused(
      shared,
      await signWithNodeKey(key, claims(), { kid: "ci-secret" }),
      /ALG_NOT_ALLOWED/,
    );
    assert.equal(
      (await shared.verify(await shared.issue("a", "viewer"))).alg,
      "EdDSA",
    );
  }));

Deno.test("jwt: a token without a kid is checked against this node's key, as docs/security.md says", () =>
  withAuth(async ({ auth, key }) => {
    const noKid = await new SignJWT(claims())
      .setProtectedHeader({ alg: "EdDSA", typ: TOKEN_TYPE })
      .sign(key.privateKey);
    assert.equal((await auth.verify(noKid)).sub, "tester");
    // Only an absent kid means the node key.
    for (const kid of [null, "", 7]) {
      await refused(
        auth,
        await signWithNodeKey(key, claims(), { kid }),
        /unknown kid/,
      );
    }
  }));

Deno.test("jwt: a token signed by another Ed25519 key is refused", () =>
  withAuth(async ({ auth, key }) => {
    const other = await generateNodeKey();
    // Claiming the node's kid: the signature does not match.
    await refused(
      auth,
      await signWithNodeKey(other, claims(), { kid: key.kid }),
      /SIGNATURE_VERIFICATION_FAILED/,
    );
    // Under its own kid, or with no kid at all.
    await refused(auth, await signWithNodeKey(other, claims()), /unknown kid/);
    await refused(
      auth,
      await new SignJWT(claims())
        .setProtectedHeader({ alg: "EdDSA", typ: TOKEN_TYPE })
        .sign(other.privateKey),
      /SIGNATURE_VERIFICATION_FAILED/,
    );
    // Embedding its public key in the header (jwk/jku/x5u) changes nothing.
    await refused(
      auth,
      await signWithNodeKey(other, claims(), {
        kid: key.kid,
        jwk: other.publicJwk,
        jku: "http://127.0.0.1:9/jwks.json",
        x5u: "http://127.0.0.1:9/cert.pem",
      }),
      /SIGNATURE_VERIFICATION_FAILED/,
    );
    // Another authority's token, same claims: refused as well.
    const foreign = createJwtAuthority(other, { clock: { now: () => T0 } });
    await refused(auth, await foreign.issue("tester", "admin"), /unknown kid/);
  }));

Deno.test({
  name:
    "jwt: kid injection values are refused without touching the filesystem or KV",
  // Any file, network or environment access inside verify would throw.
  permissions: {
    read: false,
    write: false,
    net: false,
    env: false,
    run: false,
    ffi: false,
    sys: false,
  },
  fn: async () => {
    const key = await generateNodeKey();
    const { kv, calls } = spyKv();
    const auth = createJwtAuthority(key, { kv, clock: { now: () => T0 } });
    const kids = [
      "../../../../etc/passwd",
      "/etc/passwd",
      "node-key.jwk",
      "../node-key.jwk",
      "..%2f..%2fetc%2fpasswd",
      "C:\\Windows\\win.ini",
      "file:///etc/passwd",
      "' OR '1'='1",
      "1; DROP TABLE keys; --",
      '" UNION SELECT key FROM keys --',
      "http://169.254.169.254/latest/meta-data/",
      "https://attacker.example/jwks.json",
      "//attacker.example/k",
      "__proto__",
      "constructor",
      "toString",
      "hasOwnProperty",
      "",
      "\u0000",
      `${key.kid}\u0000`,
      `${key.kid} `,
      key.kid.toUpperCase(),
      "x".repeat(5000),
    ];
    for (const kid of kids) {
      // Signed with the real node key: only the kid is wrong.
      const token = await signWithNodeKey(key, claims(), { kid });
      await refused(auth, token, /unknown kid/);
    }
    for (const kid of [42, null, ["a"], { $ne: null }, true]) {
      await refused(auth, await signWithNodeKey(key, claims(), { kid }));
    }
    assert.deepEqual(calls, [], "KV was never consulted");
    // The same token with the right kid does reach the revocation check.
    await auth.verify(await signWithNodeKey(key, claims({ jti: "j1" })));
    assert.deepEqual(calls, [`get(${JSON.stringify(REVOCATIONS_KEY)})`]);
  },
});

Deno.test("jwt: expired beyond the leeway is refused, within the leeway accepted", () =>
  withAuth(async ({ auth, clock }) => {
    const token = await auth.issue("tester", "viewer", { ttl: "60s" });
    clock.t = T0 + 60_000 + 29_000;
    assert.equal((await auth.verify(token)).sub, "tester");
    clock.t = T0 + 60_000 + 31_000;
    await refused(auth, token, /ERR_JWT_EXPIRED: "exp"/);
  }));

Deno.test("jwt: no leeway at all with clockToleranceS 0", () =>
  withAuth(async ({ with: make, clock }) => {
    const strict = make({ clockToleranceS: 0 });
    const token = await strict.issue("tester", "viewer", { ttl: "60s" });
    clock.t = T0 + 59_000;
    await strict.verify(token);
    clock.t = T0 + 60_000;
    await refused(strict, token, /ERR_JWT_EXPIRED/);
  }));

Deno.test("jwt: nbf in the future is refused", () =>
  withAuth(async ({ auth, key }) => {
    await refused(
      auth,
      await signWithNodeKey(key, claims({ nbf: T0_S + 120 })),
      /"nbf" claim timestamp check failed/,
    );
    // Within the leeway it is fine.
    await auth.verify(await signWithNodeKey(key, claims({ nbf: T0_S + 20 })));
  }));

Deno.test("jwt: iat in the future beyond the leeway is refused", () =>
  withAuth(async ({ auth, key }) => {
    await refused(
      auth,
      await signWithNodeKey(key, claims({ iat: T0_S + 120, exp: T0_S + 600 })),
      /"iat" claim timestamp check failed/,
    );
  }));

for (const claim of ["exp", "iat", "iss", "aud", "sub", "jti"]) {
  Deno.test(`jwt: a token without ${claim} is refused`, () =>
    withAuth(async ({ auth, key }) => {
      const payload = claims();
      await auth.verify(await signWithNodeKey(key, payload));
      delete payload[claim];
      await refused(
        auth,
        await signWithNodeKey(key, payload),
        new RegExp(`missing required "${claim}" claim`),
      );
    }));
}

Deno.test("jwt: wrong aud and wrong iss are refused", () =>
  withAuth(async ({ auth, with: make }) => {
    const otherIss = make({ issuer: "someone-else" });
    const otherAud = make({ audience: "other-api" });
    await refused(
      auth,
      await otherIss.issue("tester", "admin"),
      /unexpected "iss"/,
    );
    await refused(
      auth,
      await otherAud.issue("tester", "admin"),
      /unexpected "aud"/,
    );
    // And the other way round: each accepts only its own.
    await refused(
      otherIss,
      await auth.issue("tester", "admin"),
      /unexpected "iss"/,
    );
    assert.equal(
      (await otherIss.verify(await otherIss.issue("t", "viewer"))).iss,
      "someone-else",
    );
  }));

Deno.test("jwt: wrong-typed iss, aud or sub are refused", () =>
  withAuth(async ({ auth, key }) => {
    await refused(
      auth,
      await signWithNodeKey(key, claims({ iss: ["plexus"] })),
      /"iss"/,
    );
    await refused(
      auth,
      await signWithNodeKey(key, claims({ aud: "plexus-api-2" })),
      /"aud"/,
    );
    await refused(
      auth,
      await signWithNodeKey(key, claims({ sub: 7 })),
      /'sub'/,
    );
    await refused(
      auth,
      await signWithNodeKey(key, claims({ sub: "" })),
      /'sub'/,
    );
    await refused(
      auth,
      await signWithNodeKey(key, claims({ jti: 7 })),
      /'jti'/,
    );
    await refused(
      auth,
      await signWithNodeKey(key, claims({ exp: "never" })),
      /"exp" claim must be a number/,
    );
  }));

Deno.test("jwt: a token of another type (typ) is refused", () =>
  withAuth(async ({ auth, key }) => {
    await refused(
      auth,
      await signWithNodeKey(key, claims(), { typ: "JWT" }),
      /"typ"/,
    );
    await refused(
      auth,
      await signWithNodeKey(key, claims(), { typ: "id_token+jwt" }),
      /"typ"/,
    );
    await refused(
      auth,
      await signWithNodeKey(key, claims(), { typ: undefined }),
      /"typ"/,
    );
    await auth.verify(
      await signWithNodeKey(key, claims(), { typ: "application/at+jwt" }),
    );
  }));

Deno.test("jwt: a revoked jti is refused after revoke and accepted before", () =>
  withAuth(async ({ auth, kv }) => {
    const token = await auth.issue("tester", "operator", { ttl: "1h" });
    const other = await auth.issue("tester", "operator", { ttl: "1h" });
    const { jti, exp } = await auth.verify(token);
    await auth.revoke(jti, exp);
    await refused(auth, token, /is revoked/);
    await auth.verify(other); // revocation is per jti
    const entry = await kv.get<{ exp: number }>(revokedJtiKey(jti));
    assert.equal(entry.value?.exp, exp);
  }));

Deno.test("jwt: a revocation is seen by every authority sharing the KV", () =>
  withAuth(async ({ auth, with: make }) => {
    const token = await auth.issue("tester", "viewer");
    const peer = make({});
    const { jti, exp } = await peer.verify(token);
    await auth.revoke(jti, exp);
    await refused(peer, token, /is revoked/);
  }));

Deno.test("jwt: an unknown role is refused", () =>
  withAuth(async ({ auth, key }) => {
    for (
      const role of [
        "root",
        "Admin",
        "",
        "__proto__",
        "constructor",
        ["admin"],
        { admin: true },
        1,
        null,
      ]
    ) {
      await refused(
        auth,
        await signWithNodeKey(key, claims({ role })),
        /'role' must be one of/,
      );
    }
    const payload = claims();
    delete payload.role;
    await refused(
      auth,
      await signWithNodeKey(key, payload),
      /'role' must be one of/,
    );
    await assert.rejects(auth.issue("tester", "root" as "admin"), RangeError);
  }));

Deno.test("jwt: extra claims such as roles or admin do not change the role", () =>
  withAuth(async ({ auth, key }) => {
    const token = await signWithNodeKey(
      key,
      claims({
        role: "viewer",
        roles: ["admin"],
        admin: true,
        scope: "admin",
        permissions: ["admin"],
        groups: ["admin"],
        isAdmin: true,
      }),
    );
    const verified = await auth.verify(token);
    assert.equal(verified.role, "viewer");
    assert.deepEqual(Object.keys(verified).sort(), [
      "alg",
      "exp",
      "iat",
      "iss",
      "jti",
      "kid",
      "role",
      "sub",
    ]);
    assert.equal(can(verified.role, "admin"), false);
    assert.equal(can(verified.role, "tasks:write"), false);
    assert.ok(Object.isFrozen(verified));
  }));

Deno.test("jwt: a tampered payload or signature is refused", () =>
  withAuth(async ({ auth }) => {
    const [head, body, sig] = (await auth.issue("tester", "viewer")).split(".");
    const claimsSet = JSON.parse(
      new TextDecoder().decode(base64url.decode(body)),
    );
    const promoted = encodePart({ ...claimsSet, role: "admin" });
    await refused(
      auth,
      `${head}.${promoted}.${sig}`,
      /SIGNATURE_VERIFICATION_FAILED/,
    );
    const flipped = base64url.decode(sig);
    flipped[0] ^= 1;
    await refused(
      auth,
      `${head}.${body}.${base64url.encode(flipped)}`,
      /SIGNATURE_VERIFICATION_FAILED/,
    );
  }));

Deno.test("jwt: garbage and oversized input are refused with the same message", () =>
  withAuth(async ({ auth }) => {
    for (
      const bad of [
        "",
        "a",
        "a.b",
        "a.b.c",
        "....",
        "Bearer x.y.z",
        "x".repeat(9000),
      ]
    ) {
      await refused(auth, bad);
    }
    await refused(auth, 42 as unknown as string, /not a string/);
    const token = await auth.issue("tester", "viewer");
    await refused(auth, token + "." + "A".repeat(9000), /characters \(limit/);
  }));

Deno.test("jwt: lifetimes beyond maxTtl are refused when issuing and when verifying", () =>
  withAuth(async ({ auth, key, with: make }) => {
    await assert.rejects(
      auth.issue("tester", "viewer", { ttl: "31d" }),
      /ttl: Duration '31d' is out of range/,
    );
    await assert.rejects(
      auth.issue("tester", "viewer", { ttl: 500 }),
      /ttl must be a whole number of ms from 1000/,
    );
    await assert.rejects(
      auth.issue("tester", "viewer", { ttl: "soon" }),
      SyntaxError,
    );
    await refused(
      auth,
      await signWithNodeKey(key, claims({ exp: T0_S + 31 * 86_400 })),
      /exceeds maxTtl/,
    );
    const short = make({ maxTtl: "1h" });
    await assert.rejects(
      short.issue("tester", "viewer", { ttl: "2h" }),
      RangeError,
    );
    await refused(
      short,
      await auth.issue("tester", "viewer", { ttl: "2h" }),
      /exceeds maxTtl/,
    );
  }));

Deno.test("jwt: issue refuses a bad sub or jti", () =>
  withAuth(async ({ auth }) => {
    for (const sub of ["", "a\nb", "x".repeat(257), 7 as unknown as string]) {
      await assert.rejects(auth.issue(sub, "viewer"), TypeError);
    }
    for (const jti of ["", "x".repeat(129), "a\u0000"]) {
      await assert.rejects(auth.issue("t", "viewer", { jti }), TypeError);
    }
  }));

Deno.test("jwt: options are checked: leeway above 60 s, short shared secret, clashing kid", async () => {
  const key = await generateNodeKey();
  for (const clockToleranceS of [MAX_CLOCK_TOLERANCE_S + 1, -1, 1.5, NaN]) {
    assert.throws(
      () => createJwtAuthority(key, { clockToleranceS }),
      /clockToleranceS must be a whole number of seconds from 0 to 60/,
    );
  }
  createJwtAuthority(key, { clockToleranceS: MAX_CLOCK_TOLERANCE_S });
  assert.throws(
    () =>
      createJwtAuthority(key, { sharedSecret: { secret: new Uint8Array(31) } }),
    /at least 32 bytes, got 31/,
  );
  assert.throws(
    () =>
      createJwtAuthority(key, {
        sharedSecret: { secret: new Uint8Array(32), kid: key.kid },
      }),
    /is the node key's kid/,
  );
  assert.throws(() => createJwtAuthority(key, { issuer: "" }), TypeError);
  assert.throws(() => createJwtAuthority(key, { audience: "a\nb" }), TypeError);
  assert.throws(() => createJwtAuthority(key, { maxTtl: "400d" }), RangeError);
});

Deno.test("jwt: without a KV, verify and revoke throw TypeError instead of passing tokens", async () => {
  const key = await generateNodeKey();
  const auth = createJwtAuthority(key);
  const token = await auth.issue("tester", "viewer");
  await assert.rejects(
    auth.verify(token),
    (err: Error) =>
      err instanceof TypeError && /no revocation store/.test(err.message),
  );
  await assert.rejects(auth.revoke("j", 1), TypeError);
});

Deno.test("jwt: a failing revocation store refuses the token (fail closed)", async () => {
  const key = await generateNodeKey();
  const kv = {
    get: () => Promise.reject(new Error("connection reset")),
  } as unknown as Deno.Kv;
  const auth = createJwtAuthority(key, { kv });
  await refused(
    auth,
    await auth.issue("tester", "viewer"),
    /revocation store unavailable: connection reset/,
  );
});

Deno.test("jwt: a remembered token is refused once its issuer's key is no longer trusted", async () => {
  using kv = await Deno.openKv(":memory:");
  const other = await generateNodeKey();
  let trusted = true;
  const auth = createJwtAuthority(await generateNodeKey(), {
    kv,
    resolveKey: (kid) =>
      Promise.resolve(
        trusted && kid === other.kid ? other.publicKey : undefined,
      ),
  });
  const token = await createJwtAuthority(other).issue("ops", "operator");
  assert.equal((await auth.verify(token)).sub, "ops");
  assert.equal((await auth.verify(token)).sub, "ops", "served from memory");
  trusted = false;
  await assert.rejects(auth.verify(token), /invalid or expired token/);
});

Deno.test("jwt: another node sees a revocation within revocationRefreshMs; the revoking node at once", async () => {
  using kv = await Deno.openKv(":memory:");
  const key = await generateNodeKey();
  const a = createJwtAuthority(key, { kv, revocationRefreshMs: 200 });
  const b = createJwtAuthority(key, { kv, revocationRefreshMs: 200 });
  const exact = createJwtAuthority(key, { kv });
  const token = await a.issue("ops", "viewer");
  const { jti, exp } = await b.verify(token);
  await exact.verify(token);
  await a.verify(token);
  await a.revoke(jti, exp);
  await assert.rejects(
    a.verify(token),
    /invalid or expired/,
    "at once where revoked",
  );
  await assert.rejects(
    exact.verify(token),
    /invalid or expired/,
    "at once with 0",
  );
  assert.equal((await b.verify(token)).jti, jti, "still inside b's window");
  await new Promise((r) => setTimeout(r, 250));
  await assert.rejects(
    b.verify(token),
    /invalid or expired/,
    "after the window",
  );
  assert.throws(
    () => createJwtAuthority(key, { kv, revocationRefreshMs: -1 }),
    RangeError,
  );
});
