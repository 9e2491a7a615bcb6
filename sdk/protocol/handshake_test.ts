import assert from "node:assert/strict";
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import {
  agentFinish,
  agentHello,
  b64u,
  ed25519FromSeed,
  HandshakeError,
  type Hello,
  nodeWelcome,
  parseHello,
  verifyAgentSignature,
} from "./handshake.ts";
import { protocolVectors } from "./vectors.ts";

const fromHex = (h: string) => Uint8Array.fromHex(h);
const utf8 = (s: string) => new TextEncoder().encode(s);

async function pair(seed: number) {
  return await ed25519FromSeed(new Uint8Array(32).fill(seed));
}

async function refused(p: Promise<unknown>, reason: string) {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof HandshakeError, String(err));
    assert.equal(err.reason, reason, err.message);
    return true;
  });
}

Deno.test("handshake: both sides derive the same keys and session id; the agent's signature verifies", async () => {
  const node = await pair(1);
  const agent = await pair(2);
  const a = await agentHello("agent-1");
  const n = await nodeWelcome(a.text, { nodeId: "n1", ...node });
  const f = await agentFinish(a, n.text, { signingKey: agent.privateKey });
  assert.deepEqual(f.keys, n.keys);
  assert.notDeepEqual(f.keys.c2s, f.keys.s2c);
  assert.ok(
    await verifyAgentSignature(agent.publicRaw, n.keys.th2, b64u(f.signature!)),
  );
  // A different key, or the same key over another transcript, does not.
  assert.ok(
    !await verifyAgentSignature(node.publicRaw, n.keys.th2, b64u(f.signature!)),
  );
  const again = await nodeWelcome(a.text, { nodeId: "n1", ...node });
  assert.notEqual(
    again.keys.sid,
    n.keys.sid,
    "fresh node ephemeral, fresh session",
  );
  assert.ok(
    !await verifyAgentSignature(
      agent.publicRaw,
      again.keys.th2,
      b64u(f.signature!),
    ),
    "a replayed handshake (old hello and auth) fails against the new transcript",
  );
});

Deno.test("handshake: the documented vectors match an independent implementation (noble)", async () => {
  // deno-lint-ignore no-explicit-any
  const v = await protocolVectors() as Record<string, any>;
  const i = v.inputs;
  // X25519 both ways, HKDF over th2 → the two keys and the session id.
  const shared = x25519.getSharedSecret(
    fromHex(i.agentEphemeralPrivate),
    fromHex(i.nodeEphemeralPublic),
  );
  assert.deepEqual(
    x25519.getSharedSecret(
      fromHex(i.nodeEphemeralPrivate),
      fromHex(i.agentEphemeralPublic),
    ),
    shared,
  );
  assert.equal(
    Array.from(x25519.getPublicKey(fromHex(i.agentEphemeralPrivate))).map((b) =>
      b.toString(16).padStart(2, "0")
    ).join(""),
    i.agentEphemeralPublic,
  );
  const okm = hkdf(
    sha256,
    shared,
    fromHex(v.th2),
    utf8("plexus-gateway/v1 keys"),
    80,
  );
  assert.equal(okm.slice(0, 32).toHex(), v.keyAgentToNode);
  assert.equal(okm.slice(32, 64).toHex(), v.keyNodeToAgent);
  assert.equal(b64u(okm.slice(64, 80)), v.sessionId);
  // The transcript hashes.
  assert.equal(sha256(fromHex(v.transcript)).toHex(), v.th1);
  const th2 = new Uint8Array(96);
  th2.set(fromHex(v.th1));
  th2.set(fromHex(v.nodeSignature), 32);
  assert.equal(sha256(th2).toHex(), v.th2);
  // Ed25519: public keys from seeds; both signatures (deterministic) verify.
  assert.equal(
    ed25519.getPublicKey(fromHex(i.nodeSigningSeed)).toHex(),
    i.nodePublicKey,
  );
  assert.equal(
    ed25519.sign(fromHex(v.nodeSignedBytes), fromHex(i.nodeSigningSeed))
      .toHex(),
    v.nodeSignature,
  );
  assert.equal(
    ed25519.sign(fromHex(v.agentSignedBytes), fromHex(i.agentSigningSeed))
      .toHex(),
    v.agentSignature,
  );
  // The records decrypt with noble's ChaCha20-Poly1305.
  for (
    const [rec, header, body, seq] of [
      [v.records.auth, v.records.authHeader, v.records.authBody, 0],
      [v.records.data, v.records.dataHeader, v.records.dataBody, 1],
    ] as [string, string, string, number][]
  ) {
    const bytes = fromHex(rec);
    const h = utf8(header);
    const aadEnd = 16 + h.length;
    assert.deepEqual(bytes.slice(16, aadEnd), h);
    const nonce = new Uint8Array(12);
    new DataView(nonce.buffer).setBigUint64(4, BigInt(seq));
    const plain = chacha20poly1305(
      fromHex(v.keyAgentToNode),
      nonce,
      bytes.slice(0, aadEnd),
    )
      .decrypt(bytes.slice(aadEnd));
    assert.equal(new TextDecoder().decode(plain), body);
  }
  // The sealed batch frame: one ChaCha20-Poly1305 over its inner records,
  // nonce = epoch 0 ‖ sequence 1, additional data = its 16 outer bytes.
  const sb = v.sealedBatch;
  const frame = fromHex(sb.frame);
  assert.equal(frame[0], 3);
  const batchNonce = new Uint8Array(12);
  batchNonce[11] = 1;
  const inner = chacha20poly1305(
    fromHex(v.keyNodeToAgent),
    batchNonce,
    frame.slice(0, 16),
  ).decrypt(frame.slice(16));
  assert.equal(inner.toHex(), sb.plaintext);
  const iv = new DataView(inner.buffer);
  let at = 0;
  for (const k of [0, 1]) {
    const len = iv.getUint32(at);
    const flags = inner[at + 4];
    const hLen = iv.getUint16(at + 5);
    const header = inner.slice(at + 7, at + 7 + hLen);
    assert.equal(new TextDecoder().decode(header), sb.innerHeaders[k]);
    let body = inner.slice(at + 7 + hLen, at + 4 + len);
    assert.equal(flags, k);
    if (flags === 1) {
      assert.equal(body.slice(0, 64).toHex(), sb.signature);
      body = body.slice(64);
    }
    assert.equal(new TextDecoder().decode(body), sb.bodies[k]);
    at += 4 + len;
  }
  assert.equal(at, inner.length);
  // Rekey: HKDF(ikm = key, salt = empty, info = "plexus-gateway/v1 rekey").
  assert.equal(
    hkdf(
      sha256,
      fromHex(v.keyAgentToNode),
      new Uint8Array(0),
      utf8("plexus-gateway/v1 rekey"),
      32,
    ).toHex(),
    v.rekey.epoch1KeyAgentToNode,
  );
});

Deno.test("handshake: docs/protocol.md carries exactly the vectors this code produces", async () => {
  const doc = await Deno.readTextFile(
    new URL("../../docs/protocol.md", import.meta.url),
  );
  const m =
    /<!-- vectors:begin -->\n+```json\n([\s\S]*?)\n```\n+<!-- vectors:end -->/
      .exec(doc);
  assert.ok(m, "docs/protocol.md has a vectors block");
  assert.equal(m[1], JSON.stringify(await protocolVectors(), null, 2));
});

Deno.test("handshake: a downgrade (versions or suites stripped in transit) is detected by the agent", async () => {
  const node = await pair(1);
  const a = await agentHello("agent-1", {
    versions: [1, 2],
    suites: ["X25519_ED25519_CHACHAPOLY_SHA256", "FUTURE_SUITE"],
  });
  const tampered: Hello = {
    ...a.hello,
    versions: [1],
    suites: ["X25519_ED25519_CHACHAPOLY_SHA256"],
  };
  const n = await nodeWelcome(JSON.stringify(tampered), {
    nodeId: "n1",
    ...node,
  });
  await refused(agentFinish(a, n.text, {}), "bad-signature");
  // Untampered, the same offer completes.
  const ok = await nodeWelcome(a.text, { nodeId: "n1", ...node });
  await agentFinish(a, ok.text, {});
});

Deno.test("handshake: the agent refuses a welcome it did not ask for or from an untrusted node", async () => {
  const node = await pair(1);
  const other = await pair(9);
  const a = await agentHello("agent-1");
  const n = await nodeWelcome(a.text, { nodeId: "n1", ...node });
  const w = JSON.parse(n.text);
  await refused(
    agentFinish(a, JSON.stringify({ ...w, version: 2 }), {}),
    "unsupported",
  );
  await refused(
    agentFinish(a, JSON.stringify({ ...w, suite: "NULL_SUITE" }), {}),
    "unsupported",
  );
  await refused(
    agentFinish(a, JSON.stringify({ ...w, node: "n2" }), {}),
    "bad-signature",
  );
  await refused(
    agentFinish(a, JSON.stringify({ ...w, key: b64u(other.publicRaw) }), {}),
    "bad-signature",
  );
  await refused(
    agentFinish(a, n.text, {
      trustedNodeKeys: new Set([b64u(other.publicRaw)]),
    }),
    "untrusted-node",
  );
  await agentFinish(a, n.text, {
    trustedNodeKeys: new Set([b64u(node.publicRaw)]),
  });
  await refused(
    nodeWelcome(JSON.stringify({ ...a.hello, versions: [7] }), {
      nodeId: "n1",
      ...node,
    }),
    "unsupported",
  );
});

Deno.test("handshake: malformed hellos are refused with reason malformed; a low-order ephemeral with bad-key", async () => {
  const node = await pair(1);
  const a = await agentHello("agent-1");
  const h = a.hello as unknown as Record<string, unknown>;
  const bad: [string, unknown][] = [
    ["not json", "{"],
    ["an array", "[]"],
    ["binary", new Uint8Array(4)],
    ["too long", JSON.stringify({ ...h, agent: "x".repeat(5000) })],
    ["wrong type", JSON.stringify({ ...h, t: "welcome" })],
    ["no versions", JSON.stringify({ ...h, versions: [] })],
    ["version 0", JSON.stringify({ ...h, versions: [0] })],
    ["suite with comma", JSON.stringify({ ...h, suites: ["A,B"] })],
    ["empty agent", JSON.stringify({ ...h, agent: "" })],
    ["control char in agent", JSON.stringify({ ...h, agent: "a\u0000b" })],
    ["short ephemeral", JSON.stringify({ ...h, e: b64u(new Uint8Array(31)) })],
    ["padded ephemeral", JSON.stringify({ ...h, e: h.e + "=" })],
    [
      "non-canonical base64url",
      JSON.stringify({ ...h, e: (h.e as string).slice(0, -1) + "B" }),
    ],
    ["resume not boolean", JSON.stringify({ ...h, resume: "yes" })],
  ];
  for (const [name, text] of bad) {
    await refused(nodeWelcome(text, { nodeId: "n1", ...node }), "malformed")
      .catch((err) => {
        throw new Error(`${name}: ${err.message}`);
      });
  }
  // The all-zero point (order 4 on the curve): the shared secret would be zero.
  await refused(
    nodeWelcome(JSON.stringify({ ...h, e: b64u(new Uint8Array(32)) }), {
      nodeId: "n1",
      ...node,
    }),
    "bad-key",
  );
  assert.deepEqual(parseHello(a.text), a.hello);
});

Deno.test("channels: parse and build agent/backend channels; bad ids and names are refused", async () => {
  const { agentChannel, backendChannel, parseChannel } = await import(
    "./channels.ts"
  );
  const did = "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw";
  assert.deepEqual(parseChannel(`backend.${did}.policies.v2`), {
    side: "backend",
    id: did,
    name: "policies.v2",
  });
  assert.equal(agentChannel(did, "heartbeat"), `agent.${did}.heartbeat`);
  for (
    const bad of [
      "agent..x",
      "agent.a",
      "other.a.x",
      "agent.a.x..y",
      "agent.a b.x",
      "agent.a.x*",
      "agent.a.>",
    ]
  ) {
    assert.equal(parseChannel(bad), undefined, bad);
  }
  assert.throws(() => backendChannel("a.b", "x"), RangeError);
  assert.throws(() => backendChannel("a", "x y"), RangeError);
});
