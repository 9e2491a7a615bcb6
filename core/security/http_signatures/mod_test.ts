import assert from "node:assert/strict";
import { ManualClock } from "../../clock.ts";
import { signatureNonceKey } from "../../state/keys.ts";
import { createContentDigest } from "../content_digest.ts";
import {
  createSignatureBase,
  kvNonceStore,
  messageFromRequest,
  type ResolveKey,
  SignatureBaseError,
  type SignatureKey,
  type SignatureMessage,
  signMessage,
  signRequest,
  signResponse,
  VERIFICATION_FAILED_MESSAGE,
  verificationBlock,
  type VerificationFailure,
  type VerificationResult,
  verifyMessage,
  type VerifyOptions,
  verifyRequest,
  verifyResponse,
} from "./mod.ts";

// ------------------------------------------------------------ RFC 9421 B.1/B.2

const RFC_CREATED = 1618884473;
const ED25519_PKCS8 =
  "MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF";
const ED25519_SPKI =
  "MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=";
const SHARED_SECRET =
  "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==";

const B26_BASE = [
  '"date": Tue, 20 Apr 2021 02:07:55 GMT',
  '"@method": POST',
  '"@path": /foo',
  '"@authority": example.com',
  '"content-type": application/json',
  '"content-length": 18',
  '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"',
].join("\n");
const B26_INPUT =
  'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"';
const B26_SIGNATURE =
  "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:";
const B26_SIGNATURE_HEX =
  "c2a700a9b9982768e2da095f00c691cb882bb98627c769c414dd8737a8eb9c39d008ad6ed3619bd38bfd10383050f8aee00d30eafb90bf9948a7958fa412910b";

const B25_BASE = [
  '"date": Tue, 20 Apr 2021 02:07:55 GMT',
  '"@authority": example.com',
  '"content-type": application/json',
  '"@signature-params": ("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"',
].join("\n");
const B25_INPUT =
  'sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"';
const B25_SIGNATURE = "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:";
const B25_MAC_HEX =
  "a71710c3a1b7023b4c0508f0a3c5f39197ff6f0b392de95b68c939ac6206b44f";

function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function sha256Hex(text: string): Promise<string> {
  return hex(
    new Uint8Array(
      await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)),
    ),
  );
}

async function rfcKeys() {
  const edPrivate = await crypto.subtle.importKey(
    "pkcs8",
    fromBase64(ED25519_PKCS8),
    { name: "Ed25519" },
    false,
    ["sign"],
  );
  const edPublic = await crypto.subtle.importKey(
    "spki",
    fromBase64(ED25519_SPKI),
    { name: "Ed25519" },
    false,
    ["verify"],
  );
  const secret = await crypto.subtle.importKey(
    "raw",
    fromBase64(SHARED_SECRET),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
  return {
    edSigning: {
      keyid: "test-key-ed25519",
      alg: "ed25519",
      key: edPrivate,
    } as SignatureKey,
    edVerifying: {
      keyid: "test-key-ed25519",
      alg: "ed25519",
      key: edPublic,
    } as SignatureKey,
    hmac: {
      keyid: "test-shared-secret",
      alg: "hmac-sha256",
      key: secret,
    } as SignatureKey,
  };
}

/** The RFC's test-request (B.2), plus any extra headers. */
function rfcRequest(
  extra: Record<string, string> = {},
  overrides: { url?: string; method?: string; body?: string } = {},
): Request {
  return new Request(
    overrides.url ?? "https://example.com/foo?param=Value&Pet=dog",
    {
      method: overrides.method ?? "POST",
      headers: {
        "Host": "example.com",
        "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
        "Content-Type": "application/json",
        "Content-Digest":
          "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
        "Content-Length": "18",
        ...extra,
      },
      body: overrides.body ?? '{"hello": "world"}',
    },
  );
}

function resolver(...keys: SignatureKey[]): ResolveKey {
  return (keyid) => keys.find((k) => k.keyid === keyid) ?? null;
}

/** The policy the RFC examples meet: they cover neither @query nor the digest. */
function rfcPolicy(key: SignatureKey): VerifyOptions {
  return {
    resolveKey: resolver(key),
    clock: new ManualClock(RFC_CREATED * 1000),
    requiredComponents: ["@authority"],
    requireContentDigest: false,
  };
}

function failure(result: VerificationResult): VerificationFailure {
  assert.equal(
    result.verified,
    false,
    "expected a failure, got a verified message",
  );
  return result as VerificationFailure;
}

function assertVerified(result: VerificationResult): void {
  assert.equal(
    result.verified,
    true,
    result.verified ? "" : `${result.reason}: ${result.detail}`,
  );
}

Deno.test("http signatures: B.2.6 Ed25519 signature base is the RFC's, byte for byte", async () => {
  const base = createSignatureBase(
    messageFromRequest(rfcRequest()),
    B26_INPUT.slice("sig-b26=".length),
  );
  assert.equal(base, B26_BASE);
  assert.equal(new TextEncoder().encode(base).length, 284);
  assert.equal(
    await sha256Hex(base),
    "e6402577f54303accfda63dfbde1a7b8c5e5e6f3f7898637b7d78dc07ee1896a",
  );
});

Deno.test("http signatures: B.2.6 signing reproduces the RFC's Signature-Input and Signature", async () => {
  const { edSigning } = await rfcKeys();
  const signed = await signRequest(rfcRequest(), {
    key: edSigning,
    label: "sig-b26",
    components: [
      "date",
      "@method",
      "@path",
      "@authority",
      "content-type",
      "content-length",
    ],
    created: RFC_CREATED,
    nonce: false,
  });
  assert.equal(signed.headers.get("signature-input"), B26_INPUT);
  assert.equal(signed.headers.get("signature"), B26_SIGNATURE);
  const bytes = fromBase64(B26_SIGNATURE.split(":")[1]);
  assert.equal(hex(bytes), B26_SIGNATURE_HEX);
  // The body travels with the signed copy.
  assert.equal(await signed.text(), '{"hello": "world"}');
});

Deno.test("http signatures: B.2.6 the RFC's own headers verify", async () => {
  const { edVerifying } = await rfcKeys();
  const request = rfcRequest({
    "Signature-Input": B26_INPUT,
    "Signature": B26_SIGNATURE,
  });
  const result = await verifyRequest(request, rfcPolicy(edVerifying));
  assertVerified(result);
  assert.equal(result.verified && result.label, "sig-b26");
  assert.equal(result.verified && result.keyid, "test-key-ed25519");
  assert.deepEqual(result.verified && result.components, [
    '"date"',
    '"@method"',
    '"@path"',
    '"@authority"',
    '"content-type"',
    '"content-length"',
  ]);
});

Deno.test("http signatures: B.2.5 HMAC-SHA256 signature base is the RFC's, byte for byte", async () => {
  const base = createSignatureBase(
    messageFromRequest(rfcRequest()),
    B25_INPUT.slice("sig-b25=".length),
  );
  assert.equal(base, B25_BASE);
  assert.equal(new TextEncoder().encode(base).length, 200);
  assert.equal(
    await sha256Hex(base),
    "82faed1b67e492cfc8fe50fee1b6fdbdcf9f4d6384af8282339dcad5e44310e7",
  );
});

Deno.test("http signatures: B.2.5 signing reproduces the RFC's Signature-Input and Signature", async () => {
  const { hmac } = await rfcKeys();
  const signed = await signRequest(rfcRequest(), {
    key: hmac,
    label: "sig-b25",
    components: ["date", "@authority", "content-type"],
    created: RFC_CREATED,
    nonce: false,
  });
  assert.equal(signed.headers.get("signature-input"), B25_INPUT);
  assert.equal(signed.headers.get("signature"), B25_SIGNATURE);
  assert.equal(hex(fromBase64(B25_SIGNATURE.split(":")[1])), B25_MAC_HEX);
});

Deno.test("http signatures: B.2.5 the RFC's own headers verify", async () => {
  const { hmac } = await rfcKeys();
  const request = rfcRequest({
    "Signature-Input": B25_INPUT,
    "Signature": B25_SIGNATURE,
  });
  assertVerified(await verifyRequest(request, rfcPolicy(hmac)));
});

Deno.test("http signatures: B.2.6 fails when any covered component is tampered with", async () => {
  const { edVerifying } = await rfcKeys();
  const signature = {
    "Signature-Input": B26_INPUT,
    "Signature": B26_SIGNATURE,
  };
  const tampered: [string, Request][] = [
    [
      "date",
      rfcRequest({ ...signature, Date: "Tue, 20 Apr 2021 02:07:56 GMT" }),
    ],
    ["@method", rfcRequest(signature, { method: "PUT" })],
    [
      "@path",
      rfcRequest(signature, {
        url: "https://example.com/fo?param=Value&Pet=dog",
      }),
    ],
    [
      "@authority",
      rfcRequest(signature, {
        url: "https://example.org/foo?param=Value&Pet=dog",
      }),
    ],
    [
      "content-type",
      rfcRequest({ ...signature, "Content-Type": "text/plain" }),
    ],
    ["content-length", rfcRequest({ ...signature, "Content-Length": "19" })],
  ];
  for (const [component, request] of tampered) {
    const result = failure(
      await verifyRequest(request, rfcPolicy(edVerifying)),
    );
    assert.equal(result.reason, "bad-signature", component);
  }
});

Deno.test("http signatures: the RFC examples fail Plexus's default profile (no @query, no Content-Digest)", async () => {
  const { edVerifying } = await rfcKeys();
  const request = () =>
    rfcRequest({ "Signature-Input": B26_INPUT, "Signature": B26_SIGNATURE });
  const clock = new ManualClock(RFC_CREATED * 1000);
  const noQuery = failure(
    await verifyRequest(request(), {
      resolveKey: resolver(edVerifying),
      clock,
    }),
  );
  assert.equal(noQuery.reason, "missing-component");
  assert.match(noQuery.detail, /"@query"/);
  const noDigest = failure(
    await verifyRequest(request(), {
      resolveKey: resolver(edVerifying),
      clock,
      requiredComponents: ["@method", "@path", "@authority"],
    }),
  );
  assert.equal(noDigest.reason, "missing-content-digest");
});

// ------------------------------------------------------------ our own keys

const T0 = 1_700_000_000;

async function ed25519Pair(keyid = "agent-1", agentDid?: string) {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  return {
    signing: { keyid, alg: "ed25519", key: pair.privateKey } as SignatureKey,
    verifying: {
      keyid,
      alg: "ed25519",
      key: pair.publicKey,
      agentDid,
    } as SignatureKey,
  };
}

async function hmacKey(keyid = "shared-1", bytes = 32): Promise<SignatureKey> {
  const key = await crypto.subtle.importKey(
    "raw",
    crypto.getRandomValues(new Uint8Array(bytes)),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
  return { keyid, alg: "hmac-sha256", key };
}

function postTask(body = '{"type":"echo"}'): Request {
  return new Request("https://plexus.example/api/v1/tasks?priority=5", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
  });
}

/** A request at `url` carrying `from`'s signature headers. */
function transplant(from: Request, url: string, init: RequestInit = {}) {
  const headers = new Headers(init.headers);
  headers.set("signature-input", from.headers.get("signature-input")!);
  headers.set("signature", from.headers.get("signature")!);
  return new Request(url, { ...init, headers });
}

Deno.test("http signatures: a signed request round-trips under the default profile, Ed25519 and HMAC", async () => {
  const ed = await ed25519Pair("agent-1", "did:key:z6MkAgent1");
  const shared = await hmacKey();
  const kv = await Deno.openKv(":memory:");
  try {
    for (
      const [signing, verifying] of [[ed.signing, ed.verifying], [
        shared,
        shared,
      ]]
    ) {
      const clock = new ManualClock(T0 * 1000);
      const signed = await signRequest(postTask(), { key: signing, clock });
      assert.equal(
        signed.headers.get("content-digest"),
        await createContentDigest('{"type":"echo"}'),
      );
      const result = await verifyRequest(signed, {
        resolveKey: resolver(verifying),
        clock,
        nonceStore: kvNonceStore(kv, { clock }),
        requireNonce: true,
      });
      assertVerified(result);
      if (!result.verified) continue;
      assert.deepEqual(result.components, [
        '"@method"',
        '"@authority"',
        '"@path"',
        '"@query"',
        '"content-type"',
        '"content-digest"',
      ]);
      assert.equal(result.alg, signing.alg);
      assert.equal(result.created, T0);
      assert.equal(typeof result.nonce, "string");
      assert.equal(result.agentDid, verifying.agentDid);
      // The handler can still read the body after verification.
      assert.equal(await signed.text(), '{"type":"echo"}');
    }
  } finally {
    kv.close();
  }
});

Deno.test("http signatures: tampering with any one covered component fails", async () => {
  const { signing, verifying } = await ed25519Pair();
  const u = "https://example.com/a?x=1&y=2";
  const digestA = await createContentDigest("a");
  const digestB = await createContentDigest("b");
  const cases: {
    component: string;
    url: string;
    init?: RequestInit;
    tampered: [string, RequestInit?];
  }[] = [
    { component: "@method", url: u, tampered: [u, { method: "DELETE" }] },
    {
      component: "@target-uri",
      url: u,
      tampered: ["https://example.com/a?x=1&y=3"],
    },
    {
      component: "@authority",
      url: u,
      tampered: ["https://example.com:8443/a?x=1&y=2"],
    },
    {
      component: "@scheme",
      url: u,
      tampered: ["http://example.com/a?x=1&y=2"],
    },
    { component: "@path", url: u, tampered: ["https://example.com/A?x=1&y=2"] },
    { component: "@query", url: u, tampered: ["https://example.com/a?x=1"] },
    {
      component: '@query-param;name="x"',
      url: u,
      tampered: ["https://example.com/a?x=2&y=2"],
    },
    {
      component: "content-type",
      url: u,
      init: { headers: { "content-type": "application/json" } },
      tampered: [u, { headers: { "content-type": "text/plain" } }],
    },
    {
      component: "date",
      url: u,
      init: { headers: { date: "Tue, 14 Nov 2023 22:13:20 GMT" } },
      tampered: [u, { headers: { date: "Tue, 14 Nov 2023 22:13:21 GMT" } }],
    },
    {
      component: "content-digest",
      url: u,
      init: {
        method: "POST",
        body: "a",
        headers: { "content-digest": digestA },
      },
      tampered: [u, {
        method: "POST",
        body: "b",
        headers: { "content-digest": digestB },
      }],
    },
  ];
  for (const c of cases) {
    const clock = new ManualClock(T0 * 1000);
    const options: VerifyOptions = {
      resolveKey: resolver(verifying),
      clock,
      requiredComponents: [c.component],
      requireContentDigest: false,
    };
    const signed = await signRequest(new Request(c.url, c.init), {
      key: signing,
      components: [c.component],
      clock,
      nonce: false,
      contentDigest: false,
    });
    assertVerified(await verifyRequest(signed.clone(), options));
    const tampered = transplant(signed, ...c.tampered);
    const result = failure(await verifyRequest(tampered, options));
    assert.equal(result.reason, "bad-signature", c.component);
  }
});

Deno.test("http signatures: @query-param covers only its own parameter", async () => {
  const { signing, verifying } = await ed25519Pair();
  const clock = new ManualClock(T0 * 1000);
  const signed = await signRequest(
    new Request("https://example.com/a?x=1&y=2"),
    { key: signing, components: ['@query-param;name="x"'], clock },
  );
  const other = transplant(signed, "https://example.com/a?y=3&x=1");
  assertVerified(
    await verifyRequest(other, {
      resolveKey: resolver(verifying),
      clock,
      requiredComponents: ['"@query-param";name="x"'],
    }),
  );
});

Deno.test("http signatures: a changed body behind an intact Content-Digest fails after a valid signature", async () => {
  const { signing, verifying } = await ed25519Pair();
  const clock = new ManualClock(T0 * 1000);
  const signed = await signRequest(postTask(), { key: signing, clock });
  const swapped = new Request(signed.url, {
    method: "POST",
    headers: signed.headers,
    body: '{"type":"rm -rf"}',
  });
  const result = failure(
    await verifyRequest(swapped, { resolveKey: resolver(verifying), clock }),
  );
  assert.equal(result.reason, "content-digest-mismatch");
  assert.equal(result.signatureValid, true);
  assert.deepEqual(verificationBlock(result), {
    verified: false,
    signatureValid: true,
    timestamp: new Date(T0 * 1000).toISOString(),
  });
});

Deno.test("http signatures: a body without Content-Digest fails unless the policy waives it", async () => {
  const { signing, verifying } = await ed25519Pair();
  const clock = new ManualClock(T0 * 1000);
  const signed = await signRequest(postTask(), {
    key: signing,
    clock,
    contentDigest: false,
  });
  assert.equal(signed.headers.get("content-digest"), null);
  const base = { resolveKey: resolver(verifying), clock };
  const refused = failure(await verifyRequest(signed.clone(), base));
  assert.equal(refused.reason, "missing-content-digest");
  assertVerified(
    await verifyRequest(signed, { ...base, requireContentDigest: false }),
  );
  // `true` demands it even without a body.
  const get = await signRequest(
    new Request("https://plexus.example/api/v1/tasks/1"),
    { key: signing, clock },
  );
  assertVerified(await verifyRequest(get.clone(), base));
  assert.equal(
    failure(await verifyRequest(get, { ...base, requireContentDigest: true }))
      .reason,
    "missing-content-digest",
  );
});

Deno.test("http signatures: missing Signature or Signature-Input fails", async () => {
  const { signing, verifying } = await ed25519Pair();
  const clock = new ManualClock(T0 * 1000);
  const signed = await signRequest(postTask(), { key: signing, clock });
  const options = { resolveKey: resolver(verifying), clock };
  for (
    const drop of [["signature"], ["signature-input"], [
      "signature",
      "signature-input",
    ]]
  ) {
    const headers = new Headers(signed.headers);
    for (const name of drop) headers.delete(name);
    const result = failure(
      await verifyRequest(new Request(signed.url, { headers }), options),
    );
    assert.equal(result.reason, "missing-signature", drop.join("+"));
    assert.equal(result.message, VERIFICATION_FAILED_MESSAGE);
  }
});

Deno.test("http signatures: mismatched or duplicated labels fail", async () => {
  const { signing, verifying } = await ed25519Pair();
  const clock = new ManualClock(T0 * 1000);
  const signed = await signRequest(
    new Request("https://example.com/"),
    { key: signing, clock },
  );
  const options = { resolveKey: resolver(verifying), clock };
  assertVerified(await verifyRequest(signed, options));
  const input = signed.headers.get("signature-input")!;
  const signature = signed.headers.get("signature")!;
  const variants: [string, string, string, RegExp][] = [
    [
      "relabelled Signature",
      input,
      signature.replace("sig1=", "sig2="),
      /not in Signature/,
    ],
    [
      "relabelled Signature-Input",
      input.replace("sig1=", "sig2="),
      signature,
      /not in Signature/,
    ],
    [
      "duplicated Signature-Input label",
      `${input}, ${input}`,
      signature,
      /duplicated dictionary key 'sig1'/,
    ],
    [
      "duplicated Signature label",
      input,
      `${signature}, ${signature}`,
      /duplicated dictionary key 'sig1'/,
    ],
    [
      "extra Signature label",
      input,
      `${signature}, sig2=:AAAA:`,
      /'sig2' is in Signature but not/,
    ],
  ];
  for (const [what, i, s, detail] of variants) {
    const request = new Request(signed.url, {
      headers: { "signature-input": i, "signature": s },
    });
    const result = failure(await verifyRequest(request, options));
    assert.equal(result.reason, "malformed-signature", what);
    assert.match(result.detail, detail, what);
  }
});

Deno.test("http signatures: a duplicated component identifier or an unknown parameter fails", async () => {
  const { signing, verifying } = await ed25519Pair();
  const clock = new ManualClock(T0 * 1000);
  const options: VerifyOptions = {
    resolveKey: resolver(verifying),
    clock,
    requiredComponents: [],
  };
  const message: SignatureMessage = {
    method: "GET",
    targetUri: "https://example.com/?a=1",
    fields: { "content-type": "text/plain" },
  };
  const cases: [string, string, RegExp][] = [
    ['("@method" "@method")', "invalid-component", /covered twice/],
    [
      '("@query-param";name="a" "@query-param";name="a")',
      "invalid-component",
      /covered twice/,
    ],
    ['("content-type";sf;bs)', "invalid-component", /'bs' cannot be combined/],
    ['("@method";foo)', "invalid-component", /unknown parameter 'foo'/],
    [
      '("content-type";name="x")',
      "invalid-component",
      /unknown parameter 'name'/,
    ],
    ['("content-type";req=?0)', "invalid-component", /'req' must be a flag/],
    [
      '("@method");foo=1',
      "malformed-signature",
      /unknown signature parameter 'foo'/,
    ],
    [
      '("@method");created="1"',
      "malformed-signature",
      /must be of type integer/,
    ],
    ['("@method";x;x)', "malformed-signature", /duplicated parameter 'x'/],
  ];
  for (const [inner, reason, detail] of cases) {
    const input = inner.includes("created")
      ? inner + ';keyid="agent-1"'
      : `${inner};created=${T0};keyid="agent-1"`;
    const result = failure(
      await verifyMessage({
        ...message,
        fields: {
          ...message.fields,
          "signature-input": `sig1=${input}`,
          "signature": `sig1=:${btoa("x".repeat(64))}:`,
        },
      }, options),
    );
    assert.equal(result.reason, reason, inner);
    assert.match(result.detail, detail, inner);
  }
  await assert.rejects(
    () =>
      signMessage(message, {
        key: signing,
        components: ["@method", "@method"],
      }),
    SignatureBaseError,
  );
});

Deno.test("http signatures: created older than max age, created in the future and past expires fail", async () => {
  const { signing, verifying } = await ed25519Pair();
  const signed = await signRequest(new Request("https://example.com/"), {
    key: signing,
    created: T0,
    expiresInSec: 60,
  });
  const at = (sec: number, maxAgeSec?: number) =>
    verifyRequest(signed.clone(), {
      resolveKey: resolver(verifying),
      clock: new ManualClock(sec * 1000),
      maxAgeSec,
    });
  assertVerified(await at(T0));
  assertVerified(await at(T0 + 60));
  assert.equal(failure(await at(T0 + 66)).reason, "expired");
  assert.equal(failure(await at(T0 + 31, 30)).reason, "too-old");
  assertVerified(await at(T0 + 30, 30));
  assert.equal(failure(await at(T0 - 6)).reason, "created-in-future");
  assertVerified(await at(T0 - 5));
  const noExpiry = await signRequest(new Request("https://example.com/"), {
    key: signing,
    created: T0,
  });
  const stale = failure(
    await verifyRequest(noExpiry, {
      resolveKey: resolver(verifying),
      clock: new ManualClock((T0 + 301) * 1000),
    }),
  );
  assert.equal(stale.reason, "too-old");
});

Deno.test("http signatures: a reused nonce fails against a real in-memory KV store", async () => {
  const { signing, verifying } = await ed25519Pair();
  const clock = new ManualClock(T0 * 1000);
  const kv = await Deno.openKv(":memory:");
  try {
    const options: VerifyOptions = {
      resolveKey: resolver(verifying),
      clock,
      requireNonce: true,
      nonceStore: kvNonceStore(kv, { clock }),
    };
    const signed = await signRequest(postTask(), {
      key: signing,
      clock,
      nonce: "n-0001",
    });
    // A tampered copy carrying the same nonce must not burn it.
    const tampered = new Request(signed.url, {
      method: "PUT",
      headers: signed.headers,
      body: '{"type":"echo"}',
    });
    assert.equal(
      failure(await verifyRequest(tampered, options)).reason,
      "bad-signature",
    );
    assert.equal(
      (await kv.get(signatureNonceKey("agent-1", "n-0001"))).value,
      null,
    );
    assertVerified(await verifyRequest(signed.clone(), options));
    const stored = await kv.get(signatureNonceKey("agent-1", "n-0001"));
    assert.deepEqual(stored.value, { seenAt: T0 * 1000 });
    const replay = failure(await verifyRequest(signed, options));
    assert.equal(replay.reason, "replayed-nonce");
    assert.equal(replay.signatureValid, true);
    // A fresh nonce from the same key is fine.
    assertVerified(
      await verifyRequest(
        await signRequest(postTask(), { key: signing, clock }),
        options,
      ),
    );
    const noNonce = await signRequest(postTask(), {
      key: signing,
      clock,
      nonce: false,
    });
    const missing = failure(await verifyRequest(noNonce, options));
    assert.equal(missing.reason, "missing-parameter");
    assert.match(missing.detail, /nonce/);
  } finally {
    kv.close();
  }
});

Deno.test("http signatures: the KV nonce store admits a nonce once per keyid", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const seen = kvNonceStore(kv, { clock: new ManualClock(5) });
    assert.equal(await seen("k1", "n", 60), true);
    assert.equal(await seen("k1", "n", 60), false);
    assert.equal(await seen("k2", "n", 60), true);
    assert.equal(await seen("k1", "m", Infinity), true);
    assert.deepEqual((await kv.get(signatureNonceKey("k2", "n"))).value, {
      seenAt: 5,
    });
  } finally {
    kv.close();
  }
});

Deno.test("http signatures: concurrent nonces are grouped into few commits and exactly the replays are refused", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    let commits = 0;
    const counting = new Proxy(kv, {
      get(target, prop) {
        if (prop === "atomic") {
          return () => {
            const op = target.atomic();
            const commit = op.commit.bind(op);
            op.commit = () => {
              commits++;
              return commit();
            };
            return op;
          };
        }
        const v = Reflect.get(target, prop);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    const seen = kvNonceStore(counting, { maxBatch: 10, maxInFlight: 1 });
    assert.equal(await seen("k", "old", 60), true);
    commits = 0;
    // 40 fresh nonces, one already seen, and one fresh nonce sent twice.
    const names = [
      ...Array.from({ length: 40 }, (_, i) => `n${i}`),
      "old",
      "twice",
      "twice",
    ];
    const results = await Promise.all(names.map((n) => seen("k", n, 60)));
    assert.deepEqual(
      results,
      [...Array(40).fill(true), false, true, false],
    );
    // Without grouping this is 43 commits; the batch holding "old" falls
    // back to one commit per nonce.
    assert.ok(commits < 25, `${commits} commits`);
    for (const n of ["n0", "n39", "twice"]) {
      assert.equal(await seen("k", n, 60), false, n);
    }
  } finally {
    kv.close();
  }
});

Deno.test("http signatures: an alg parameter that disagrees with the key fails", async () => {
  const { signing, verifying } = await ed25519Pair("k");
  const clock = new ManualClock(T0 * 1000);
  const signed = await signRequest(new Request("https://example.com/"), {
    key: signing,
    clock,
    includeAlg: true,
  });
  assert.match(signed.headers.get("signature-input")!, /;alg="ed25519"/);
  assertVerified(
    await verifyRequest(signed.clone(), {
      resolveKey: resolver(verifying),
      clock,
    }),
  );
  // The same keyid configured as an HMAC key: the message's alg must not win.
  const hmac = await hmacKey("k");
  const mismatch = failure(
    await verifyRequest(signed.clone(), { resolveKey: resolver(hmac), clock }),
  );
  assert.equal(mismatch.reason, "algorithm-mismatch");
  // An HMAC signature claiming ed25519 is refused before any MAC check.
  const lying = await signRequest(new Request("https://example.com/"), {
    key: hmac,
    clock,
  });
  const input = lying.headers.get("signature-input")!.replace(
    ';keyid="k"',
    ';keyid="k";alg="rsa-pss-sha512"',
  );
  const forged = new Request(lying.url, {
    headers: {
      "signature-input": input,
      signature: lying.headers.get("signature")!,
    },
  });
  assert.equal(
    failure(await verifyRequest(forged, { resolveKey: resolver(hmac), clock }))
      .reason,
    "algorithm-mismatch",
  );
});

Deno.test("http signatures: an unknown keyid and a bad signature look the same to callers", async () => {
  const { signing, verifying } = await ed25519Pair("agent-1");
  const other = await ed25519Pair("agent-1");
  const clock = new ManualClock(T0 * 1000);
  const signed = await signRequest(new Request("https://example.com/"), {
    key: signing,
    clock,
  });
  const unknown = failure(
    await verifyRequest(signed.clone(), { resolveKey: () => null, clock }),
  );
  const badSig = failure(
    await verifyRequest(signed.clone(), {
      resolveKey: resolver(other.verifying),
      clock,
    }),
  );
  // A resolver answering with a different key id is not trusted either.
  const wrongId = failure(
    await verifyRequest(signed.clone(), {
      resolveKey: () => ({ ...verifying, keyid: "agent-2" }),
      clock,
    }),
  );
  assert.equal(unknown.reason, "unknown-key");
  assert.equal(wrongId.reason, "unknown-key");
  assert.equal(badSig.reason, "bad-signature");
  assert.equal(unknown.message, VERIFICATION_FAILED_MESSAGE);
  assert.equal(badSig.message, unknown.message);
  assert.deepEqual(verificationBlock(unknown), verificationBlock(badSig));
  assert.deepEqual(verificationBlock(unknown), {
    verified: false,
    signatureValid: false,
    timestamp: new Date(T0 * 1000).toISOString(),
  });
  assert.notEqual(unknown.detail, badSig.detail);
});

Deno.test("http signatures: keys of the wrong kind are refused", async () => {
  const { signing, verifying } = await ed25519Pair("k");
  const clock = new ManualClock(T0 * 1000);
  const signed = await signRequest(new Request("https://example.com/"), {
    key: signing,
    clock,
  });
  // A private key where a public one belongs (it cannot verify anyway).
  const asPrivate = failure(
    await verifyRequest(signed.clone(), {
      resolveKey: resolver(signing),
      clock,
    }),
  );
  assert.equal(asPrivate.reason, "unusable-key");
  // A 128-bit HMAC secret is too short to sign with or to trust.
  const short = await hmacKey("s", 16);
  await assert.rejects(
    () => signRequest(new Request("https://example.com/"), { key: short }),
    (err: Error) =>
      err instanceof TypeError && /shorter than 256 bits/.test(err.message),
  );
  const inner =
    `("@method" "@authority" "@path" "@query");created=${T0};keyid="s"`;
  const mac = new Uint8Array(
    await crypto.subtle.sign(
      "HMAC",
      short.key,
      new TextEncoder().encode(
        createSignatureBase(
          { method: "GET", targetUri: "https://example.com/", fields: {} },
          inner,
        ),
      ),
    ),
  );
  const forged = new Request("https://example.com/", {
    headers: {
      "signature-input": `sig1=${inner}`,
      signature: `sig1=:${btoa(String.fromCharCode(...mac))}:`,
    },
  });
  assert.equal(
    failure(await verifyRequest(forged, { resolveKey: resolver(short), clock }))
      .reason,
    "unusable-key",
  );
  await assert.rejects(
    () => signRequest(new Request("https://example.com/"), { key: verifying }),
    /may not be used to sign/,
  );
});

Deno.test("http signatures: a header literally named @method never stands in for the derived component", async () => {
  assert.throws(() => new Headers({ "@method": "GET" }), TypeError);
  // Deno's Headers refuse the name, so build the message from a field map.
  const message: SignatureMessage = {
    method: "POST",
    targetUri: "https://example.com/",
    fields: { "@method": "GET", "@path": "/admin" },
  };
  assert.equal(
    createSignatureBase(message, '("@method" "@path")'),
    '"@method": POST\n"@path": /\n"@signature-params": ("@method" "@path")',
  );
  const { signing, verifying } = await ed25519Pair();
  const clock = new ManualClock(T0 * 1000);
  const parts = await signMessage(
    { ...message, fields: {} },
    { key: signing, components: ["@method"], clock },
  );
  const options: VerifyOptions = {
    resolveKey: resolver(verifying),
    clock,
    requiredComponents: ["@method"],
  };
  const carrying = (method: string, fields: Record<string, string>) =>
    verifyMessage({
      ...message,
      method,
      fields: {
        ...fields,
        "signature-input": parts.signatureInput,
        signature: parts.signature,
      },
    }, options);
  assertVerified(await carrying("POST", { "@method": "DELETE" }));
  assert.equal(
    failure(await carrying("DELETE", { "@method": "POST" })).reason,
    "bad-signature",
  );
});

Deno.test("http signatures: @query-param decodes then re-encodes as RFC 9421 §2.2.8 shows", () => {
  const base = (url: string, names: string[]) =>
    createSignatureBase(
      { method: "GET", targetUri: url, fields: {} },
      `(${names.map((n) => `"@query-param";name="${n}"`).join(" ")})`,
    ).split("\n").slice(0, -1);
  assert.deepEqual(
    base("https://example.com/path?param=value&foo=bar&baz=batman&qux=", [
      "baz",
      "qux",
      "param",
    ]),
    [
      '"@query-param";name="baz": batman',
      '"@query-param";name="qux": ',
      '"@query-param";name="param": value',
    ],
  );
  assert.deepEqual(
    base(
      "https://example.com/parameters?var=this%20is%20a%20big%0Amultiline%20value&bar=with+plus+whitespace&fa%C3%A7ade%22%3A%20=something",
      ["var", "bar", "fa%C3%A7ade%22%3A%20"],
    ),
    [
      '"@query-param";name="var": this%20is%20a%20big%0Amultiline%20value',
      '"@query-param";name="bar": with%20plus%20whitespace',
      '"@query-param";name="fa%C3%A7ade%22%3A%20": something',
    ],
  );
  // `+` and `%20` are the same space once decoded; `!'()~` are encoded too.
  assert.deepEqual(
    base("https://example.com/?a=x%20y!&b=x+y~", ["a", "b"]),
    ['"@query-param";name="a": x%20y%21', '"@query-param";name="b": x%20y%7E'],
  );
  for (
    const [url, name] of [
      ["https://example.com/?a=1", "missing"],
      ["https://example.com/?a=1&a=2", "a"],
      ["https://example.com/?a=1&%61=2", "a"],
      ["https://example.com/?a=&a=2", "a"],
    ]
  ) {
    assert.throws(() => base(url, [name]), SignatureBaseError, url);
  }
});

Deno.test("http signatures: derived components follow RFC 9421 §2.2", () => {
  const value = (url: string, component: string, method = "POST") =>
    createSignatureBase(
      { method, targetUri: url, fields: {} },
      `(${component})`,
    ).split("\n")[0].split(": ").slice(1).join(": ");
  const u = "https://www.example.com/path?param=value";
  assert.equal(value(u, '"@method"'), "POST");
  assert.equal(value(u, '"@method"', "get"), "get");
  assert.equal(value(u, '"@target-uri"'), u);
  assert.equal(value(u, '"@authority"'), "www.example.com");
  assert.equal(value(u, '"@scheme"'), "https");
  assert.equal(value(u, '"@path"'), "/path");
  assert.equal(value(u, '"@query"'), "?param=value");
  assert.equal(
    value("HTTPS://WWW.Example.COM:443/Path", '"@authority"'),
    "www.example.com",
  );
  assert.equal(
    value("http://example.com:8080/", '"@authority"'),
    "example.com:8080",
  );
  assert.equal(value("HTTP://example.com/", '"@scheme"'), "http");
  assert.equal(value("https://example.com", '"@path"'), "/");
  assert.equal(
    value("https://example.com/p?queryString", '"@query"'),
    "?queryString",
  );
  assert.equal(value("https://example.com/p", '"@query"'), "?");
  assert.equal(value("https://example.com/p?", '"@query"'), "?");
  assert.equal(value("https://example.com/a%2Fb", '"@path"'), "/a%2Fb");
});

Deno.test("http signatures: HTTP fields follow RFC 9421 §2.1 (OWS, obs-fold, repeats, empty)", () => {
  const names = [
    "host",
    "date",
    "x-ows-header",
    "x-obs-fold-header",
    "cache-control",
    "example-dict",
    "x-empty-header",
  ];
  const message: SignatureMessage = {
    method: "GET",
    targetUri: "https://www.example.com/",
    fields: [
      ["Host", "www.example.com"],
      ["Date", "Tue, 20 Apr 2021 02:07:56 GMT"],
      ["X-OWS-Header", "   Leading and trailing whitespace.   "],
      ["X-Obs-Fold-Header", "Obsolete\r\n    line folding."],
      ["Cache-Control", "max-age=60"],
      ["Cache-Control", "   must-revalidate"],
      ["Example-Dict", " a=1,    b=2;x=1;y=2,   c=(a   b   c)"],
      ["X-Empty-Header", ""],
    ],
  };
  const base = createSignatureBase(
    message,
    `(${names.map((n) => JSON.stringify(n)).join(" ")})`,
  );
  assert.deepEqual(base.split("\n").slice(0, -1), [
    '"host": www.example.com',
    '"date": Tue, 20 Apr 2021 02:07:56 GMT',
    '"x-ows-header": Leading and trailing whitespace.',
    '"x-obs-fold-header": Obsolete line folding.',
    '"cache-control": max-age=60, must-revalidate',
    '"example-dict": a=1,    b=2;x=1;y=2,   c=(a   b   c)',
    '"x-empty-header": ',
  ]);
  // Deno's Headers joins repeats the same way.
  const headers = new Headers();
  headers.append("Cache-Control", "max-age=60");
  headers.append("Cache-Control", "   must-revalidate");
  assert.equal(
    createSignatureBase(
      { method: "GET", targetUri: "https://x/", fields: headers },
      '("cache-control")',
    ).split("\n")[0],
    '"cache-control": max-age=60, must-revalidate',
  );
});

Deno.test("http signatures: sf, key and bs follow RFC 9421 §2.1.1-2.1.3", () => {
  const dictMessage: SignatureMessage = {
    method: "GET",
    targetUri: "https://example.com/",
    fields: { "Example-Dict": "  a=1,    b=2;x=1;y=2,   c=(a   b   c), d" },
  };
  const lines = (message: SignatureMessage, inner: string) =>
    createSignatureBase(message, inner, {
      structuredFieldTypes: { "example-dict": "dictionary" },
    }).split("\n").slice(0, -1);
  assert.deepEqual(
    lines(
      dictMessage,
      '("example-dict" "example-dict";sf "example-dict";key="a" "example-dict";key="d" "example-dict";key="b" "example-dict";key="c")',
    ),
    [
      '"example-dict": a=1,    b=2;x=1;y=2,   c=(a   b   c), d',
      '"example-dict";sf: a=1, b=2;x=1;y=2, c=(a b c), d',
      '"example-dict";key="a": 1',
      '"example-dict";key="d": ?1',
      '"example-dict";key="b": 2;x=1;y=2',
      '"example-dict";key="c": (a b c)',
    ],
  );
  assert.throws(
    () => lines(dictMessage, '("example-dict";key="zz")'),
    /no dictionary key 'zz'/,
  );
  assert.throws(
    () => createSignatureBase(dictMessage, '("example-dict";sf)'),
    /no known structured type/,
  );
  assert.throws(
    () =>
      lines(
        { ...dictMessage, fields: { "example-dict": "a=(" } },
        '("example-dict";sf)',
      ),
    /not a valid structured field/,
  );
  const twoLines: SignatureMessage = {
    method: "GET",
    targetUri: "https://example.com/",
    fields: [["Example-Header", "value, with, lots"], [
      "Example-Header",
      "of, commas",
    ]],
  };
  assert.deepEqual(lines(twoLines, '("example-header" "example-header";bs)'), [
    '"example-header": value, with, lots, of, commas',
    '"example-header";bs: :dmFsdWUsIHdpdGgsIGxvdHM=:, :b2YsIGNvbW1hcw==:',
  ]);
  // Through Fetch Headers the two lines arrive joined: one byte sequence.
  const headers = new Headers();
  headers.append("Example-Header", "value, with, lots");
  headers.append("Example-Header", "of, commas");
  assert.deepEqual(
    lines({ ...twoLines, fields: headers }, '("example-header";bs)'),
    ['"example-header";bs: :dmFsdWUsIHdpdGgsIGxvdHMsIG9mLCBjb21tYXM=:'],
  );
});

Deno.test("http signatures: components that do not apply are errors, not empty values", () => {
  const request: SignatureMessage = {
    method: "GET",
    targetUri: "https://example.com/",
    fields: { "x-a": "1", "x-b": "caf\u00e9" },
  };
  const response: SignatureMessage = { status: 200, fields: { "x-a": "1" } };
  const cases: [SignatureMessage, string, RegExp][] = [
    [request, '("@status")', /only defined for a response/],
    [request, '("@method";req)', /only defined when signing a response/],
    [response, '("@method")', /needs a request/],
    [response, '("@path")', /needs a request/],
    [response, '("@authority";req)', /request is not available/],
    [request, '("x-a";tr)', /no trailers/],
    [request, '("@request-target")', /@request-target/],
    [request, '("@signature-params")', /cannot be covered/],
    [request, '("@unknown")', /unknown derived component/],
    [request, '("Content-Type")', /lowercase token/],
    [request, '("x-missing")', /missing/],
    [request, '("x-b")', /outside visible ASCII/],
    [request, "(x-a)", /must be a string/],
    [request, '("@query-param")', /needs a 'name'/],
  ];
  for (const [message, inner, error] of cases) {
    assert.throws(
      () => createSignatureBase(message, inner),
      (err: Error) =>
        err instanceof SignatureBaseError && error.test(err.message),
      inner,
    );
  }
  assert.equal(
    createSignatureBase(
      { ...request, trailers: { "x-t": "done" } },
      '("x-t";tr)',
    ).split("\n")[0],
    '"x-t";tr: done',
  );
  assert.equal(
    createSignatureBase(response, '("@status")').split("\n")[0],
    '"@status": 200',
  );
});

Deno.test("http signatures: a signed response round-trips, covering @status and request components with req", async () => {
  const { signing, verifying } = await ed25519Pair("node-1");
  const clock = new ManualClock(T0 * 1000);
  const request = new Request("https://example.com/api/v1/tasks/7?view=full", {
    method: "GET",
  });
  const signed = await signResponse(
    Response.json({ id: "7" }, { status: 200 }),
    {
      key: signing,
      clock,
      request,
      components: [
        "@status",
        "content-type",
        "content-digest",
        "@method;req",
        "@authority;req",
        "@path;req",
        "@query;req",
      ],
    },
  );
  const options = {
    resolveKey: resolver(verifying),
    clock,
    request,
    requiredComponents: ["@status", '"@path";req'],
  };
  const result = await verifyResponse(signed.clone(), options);
  assertVerified(result);
  assert.equal(await signed.clone().text(), '{"id":"7"}');

  const otherRequest = new Request(
    "https://example.com/api/v1/tasks/8?view=full",
  );
  assert.equal(
    failure(
      await verifyResponse(signed.clone(), {
        ...options,
        request: otherRequest,
      }),
    )
      .reason,
    "bad-signature",
  );
  const { request: _, ...withoutRequest } = options;
  assert.equal(
    failure(await verifyResponse(signed.clone(), withoutRequest)).reason,
    "invalid-component",
  );
  const relabelled = new Response(await signed.clone().arrayBuffer(), {
    status: 201,
    headers: signed.headers,
  });
  assert.equal(
    failure(await verifyResponse(relabelled, options)).reason,
    "bad-signature",
  );
  // Default response signing covers @status, content-type and the digest.
  const plain = await signResponse(Response.json({ ok: true }), {
    key: signing,
    clock,
  });
  assert.match(
    plain.headers.get("signature-input")!,
    /^sig1=\("@status" "content-type" "content-digest"\)/,
  );
  assertVerified(
    await verifyResponse(plain, { resolveKey: resolver(verifying), clock }),
  );
});

Deno.test("http signatures: the policy picks a signature by tag or label; two without one are ambiguous", async () => {
  const agent = await ed25519Pair("agent-1");
  const proxy = await hmacKey("proxy-1");
  const clock = new ManualClock(T0 * 1000);
  const once = await signRequest(postTask(), {
    key: agent.signing,
    clock,
    tag: "plexus-agent",
  });
  const twice = await signRequest(once, {
    key: proxy,
    clock,
    label: "proxy",
    tag: "plexus-proxy",
  });
  assert.match(twice.headers.get("signature-input")!, /^sig1=.*, proxy=/);
  const options = { resolveKey: resolver(agent.verifying, proxy), clock };
  assert.equal(
    failure(await verifyRequest(twice.clone(), options)).reason,
    "ambiguous-signature",
  );
  const byTag = await verifyRequest(twice.clone(), {
    ...options,
    tag: "plexus-proxy",
  });
  assertVerified(byTag);
  assert.equal(byTag.verified && byTag.keyid, "proxy-1");
  const byLabel = await verifyRequest(twice.clone(), {
    ...options,
    label: "sig1",
  });
  assert.equal(byLabel.verified && byLabel.keyid, "agent-1");
  assert.equal(
    failure(await verifyRequest(twice.clone(), { ...options, tag: "other" }))
      .reason,
    "no-matching-signature",
  );
  await assert.rejects(
    () => signRequest(twice, { key: proxy, label: "proxy" }),
    /label 'proxy' is already/,
  );
});

Deno.test("http signatures: verificationBlock reports verified, agent DID, signatureValid and time only", async () => {
  const { signing, verifying } = await ed25519Pair(
    "agent-1",
    "did:key:z6MkAgent1",
  );
  const clock = new ManualClock(T0 * 1000);
  const signed = await signRequest(new Request("https://example.com/"), {
    key: signing,
    clock,
  });
  const result = await verifyRequest(signed, {
    resolveKey: resolver(verifying),
    clock,
  });
  assert.deepEqual(verificationBlock(result), {
    verified: true,
    agentDid: "did:key:z6MkAgent1",
    signatureValid: true,
    timestamp: "2023-11-14T22:13:20.000Z",
  });
});

Deno.test("http signatures: a misconfigured policy throws instead of failing open", async () => {
  const request = new Request("https://example.com/");
  const resolveKey = () => null;
  await assert.rejects(
    () => verifyRequest(request, { resolveKey, requireNonce: true }),
    /needs a 'nonceStore'/,
  );
  await assert.rejects(
    () =>
      verifyRequest(request, { resolveKey, requiredComponents: ["Bad Name"] }),
    /invalid 'requiredComponents'/,
  );
  await assert.rejects(
    () => verifyRequest(request, { resolveKey, maxAgeSec: -1 }),
    RangeError,
  );
});
