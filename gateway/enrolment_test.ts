import assert from "node:assert/strict";
import { ed25519DidKey } from "../core/security/ed25519.ts";
import { b64u } from "../sdk/protocol/handshake.ts";
import {
  agentEnrolmentSchema,
  enrolAgent,
  EnrolmentError,
  getAgent,
  getAgents,
  listAgents,
  removeAgent,
} from "./enrolment.ts";

async function key(): Promise<{ raw: Uint8Array; b64: string; did: string }> {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const raw = new Uint8Array(
    await crypto.subtle.exportKey("raw", pair.publicKey),
  );
  return { raw, b64: b64u(raw), did: ed25519DidKey(raw) };
}

Deno.test("enrolment: stores the raw key and roles; a repeat is 409 unless replaced", async () => {
  using kv = await Deno.openKv(":memory:");
  const k = await key();
  const { record, replaced } = await enrolAgent(
    kv,
    { agentId: k.did, publicKey: k.raw.toHex(), roles: ["agent", "agent"] },
    "ops",
    5,
  );
  assert.deepEqual(record, {
    agentId: k.did,
    publicKey: k.b64,
    roles: ["agent"],
    enrolledAt: 5,
    enrolledBy: "ops",
  });
  assert.equal(replaced, false);
  await assert.rejects(
    enrolAgent(
      kv,
      { agentId: k.did, publicKey: k.b64, roles: ["agent"] },
      "ops",
    ),
    (e) => e instanceof EnrolmentError && e.status === 409,
  );
  const k2 = await key();
  await assert.rejects(
    enrolAgent(kv, {
      agentId: k.did,
      publicKey: k2.b64,
      roles: ["agent"],
      replace: true,
    }, "ops"),
    (e) =>
      e instanceof EnrolmentError && e.status === 400 &&
      /did:key/.test(e.message),
  );
  assert.equal(
    (await enrolAgent(kv, {
      agentId: "plain-1",
      publicKey: k2.b64,
      roles: ["worker"],
    }, "ops")).replaced,
    false,
  );
  assert.equal(
    (await enrolAgent(kv, {
      agentId: "plain-1",
      publicKey: k.b64,
      roles: ["worker"],
      replace: true,
    }, "ops")).replaced,
    true,
  );
  assert.equal((await getAgent(kv, "plain-1"))?.publicKey, k.b64);
  assert.deepEqual(
    (await listAgents(kv)).map((r) => r.agentId).sort(),
    [k.did, "plain-1"].sort(),
  );
  assert.equal(await removeAgent(kv, "plain-1"), true);
  assert.equal(await removeAgent(kv, "plain-1"), false);
  assert.equal(await getAgent(kv, "plain-1"), null);
  assert.equal(await getAgent(kv, "not.an.id"), null);
});

Deno.test("enrolment: small-order and malformed keys are refused with a reason", async () => {
  using kv = await Deno.openKv(":memory:");
  for (
    const [publicKey, why] of [
      ["01" + "00".repeat(31), /small-order/],
      ["00".repeat(32), /./],
      [b64u(new Uint8Array(33)), /./],
    ] as const
  ) {
    await assert.rejects(
      enrolAgent(kv, { agentId: "x", publicKey, roles: ["agent"] }, "ops"),
      (e) =>
        e instanceof EnrolmentError && e.status === 400 && why.test(e.message),
    );
  }
  assert.deepEqual(await listAgents(kv), []);
  // The HTTP schema: ids without dots, 1-16 lower-case roles, nothing else.
  const ok = { agentId: "a", publicKey: "k", roles: ["agent"] };
  assert.equal(agentEnrolmentSchema.safeParse(ok).success, true);
  for (
    const bad of [{ ...ok, agentId: "a.b" }, { ...ok, roles: [] }, {
      ...ok,
      roles: ["A"],
    }, { ...ok, x: 1 }]
  ) {
    assert.equal(
      agentEnrolmentSchema.safeParse(bad).success,
      false,
      JSON.stringify(bad),
    );
  }
});

Deno.test("enrolment: getAgents reads many enrolments in order, null for unknown or malformed ids, past one getMany's 10 keys", async () => {
  using kv = await Deno.openKv(":memory:");
  const dids: string[] = [];
  for (let i = 0; i < 23; i++) {
    const k = await key();
    await enrolAgent(
      kv,
      {
        agentId: k.did,
        publicKey: k.raw.toHex(),
        roles: ["agent"],
      },
      "ops",
      i,
    );
    dids.push(k.did);
  }
  const ids = [
    ...dids.slice(0, 12),
    "not an id!",
    (await key()).did,
    ...dids.slice(12),
  ];
  const got = await getAgents(kv, ids);
  assert.equal(got.length, ids.length);
  assert.deepEqual(
    got.map((r) => r?.agentId ?? null),
    ids.map((id) => dids.includes(id) ? id : null),
  );
  for (const [i, id] of ids.entries()) {
    assert.deepEqual(got[i], await getAgent(kv, id));
  }
  assert.deepEqual(await getAgents(kv, []), []);
});
