import assert from "node:assert/strict";
import { gatewayAgentKey, sealingKeyKey } from "../state/keys.ts";
import { createEnvelope } from "../envelope.ts";
import { memoryTransport } from "../../testing/memory_transport.ts";
import { generateKeyPair } from "./hpke.ts";
import { sealedTransport } from "./sealed_transport.ts";
import {
  kvSealingDirectory,
  SealingKeyError,
  signSealingKeyStatement,
} from "./sealing_keys.ts";
import { TransportError } from "../transport.ts";

const B64U = { alphabet: "base64url", omitPadding: true } as const;

async function ed25519() {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const raw = new Uint8Array(
    await crypto.subtle.exportKey("raw", pair.publicKey),
  );
  return { ...pair, raw };
}

/** A KV with agent `id` enrolled (the gateway's record) under a fresh key. */
async function enrolled(id = "agent-1") {
  const kv = await Deno.openKv(":memory:");
  const key = await ed25519();
  await kv.set(gatewayAgentKey(id), {
    agentId: id,
    publicKey: key.raw.toBase64(B64U),
    roles: ["agent"],
    enrolledAt: Date.now(),
    enrolledBy: "test",
  });
  return { kv, key, id };
}

Deno.test("sealing keys: an agent's key signed by its enrolled key is published and looked up", async () => {
  const { kv, key, id } = await enrolled();
  try {
    const dir = kvSealingDirectory(kv, { cacheMs: 0 });
    const x = await generateKeyPair();
    const sig = await signSealingKeyStatement(key.privateKey, id, x.publicKey);
    await dir.publishAgent(id, x.publicKey, sig);
    const peer = await dir.lookup(`agent:${id}`);
    assert.deepEqual(peer?.x25519, x.publicKey);
    assert.deepEqual(
      new Uint8Array(await crypto.subtle.exportKey("raw", peer!.ed25519)),
      key.raw,
    );
    const stored = (await kv.get<Record<string, string>>(
      sealingKeyKey(`agent:${id}`),
    )).value!;
    assert.equal(stored.sig, sig.toBase64(B64U));
  } finally {
    kv.close();
  }
});

Deno.test("sealing keys: the node refuses to publish a statement not signed by the enrolled key, or for an agent not enrolled", async () => {
  const { kv, id } = await enrolled();
  try {
    const dir = kvSealingDirectory(kv, { cacheMs: 0 });
    const x = await generateKeyPair();
    const other = await ed25519();
    const forged = await signSealingKeyStatement(
      other.privateKey,
      id,
      x.publicKey,
    );
    await assert.rejects(
      dir.publishAgent(id, x.publicKey, forged),
      (err: Error) =>
        err instanceof SealingKeyError &&
        /not signed by the agent's enrolled key/.test(err.message),
    );
    await assert.rejects(
      dir.publishAgent("nobody", x.publicKey, forged),
      (err: Error) =>
        err instanceof SealingKeyError && /not enrolled/.test(err.message),
    );
    assert.equal((await kv.get(sealingKeyKey(`agent:${id}`))).value, null);
  } finally {
    kv.close();
  }
});

Deno.test("sealing keys: a directory entry with a wrong signature or a key not the enrolled one is refused at the sender", async (t) => {
  const { kv, key, id } = await enrolled();
  try {
    const dir = kvSealingDirectory(kv, { cacheMs: 0 });
    const x = await generateKeyPair();
    const sig = await signSealingKeyStatement(key.privateKey, id, x.publicKey);
    await dir.publishAgent(id, x.publicKey, sig);
    const entry = sealingKeyKey(`agent:${id}`);
    const good = (await kv.get<Record<string, unknown>>(entry)).value!;
    const sender = await ed25519();
    const senderX = await generateKeyPair();
    await dir.publish("node:a", senderX.publicKey, sender.raw);
    const t0 = sealedTransport(memoryTransport(), {
      topics: [{
        pattern: "ops.>",
        recipients: [`agent:${id}`],
        deliver: { channel: "sealed" },
      }],
    }, {
      id: "node:a",
      signingKey: sender.privateKey,
      x25519: senderX,
      directory: dir,
    });
    const publish = () =>
      t0.publish(
        "ops.keys",
        createEnvelope({
          type: "event",
          topic: "ops.keys",
          source: "a",
          payload: 1,
        }),
      );
    await publish(); // the genuine entry seals

    await t.step("another X25519 key under the agent's signature", async () => {
      const swapped = await generateKeyPair();
      await kv.set(entry, {
        ...good,
        x25519: swapped.publicKey.toBase64(B64U),
      });
      await assert.rejects(dir.lookup(`agent:${id}`), SealingKeyError);
      await assert.rejects(
        publish(),
        (err: Error) =>
          err instanceof TransportError && err.code === "invalid_argument" &&
          /is refused/.test(err.message) &&
          /not signed by the agent's enrolled key/.test(err.message),
      );
    });

    await t.step(
      "an entry signed by a key that is not the enrolled one",
      async () => {
        const mallory = await ed25519();
        const msig = await signSealingKeyStatement(
          mallory.privateKey,
          id,
          x.publicKey,
        );
        await kv.set(entry, {
          ...good,
          ed25519: mallory.raw.toBase64(B64U),
          sig: msig.toBase64(B64U),
        });
        await assert.rejects(
          publish(),
          (err: Error) =>
            err instanceof TransportError &&
            /not the agent's enrolled key/.test(err.message),
        );
      },
    );

    await t.step("an entry without a signature", async () => {
      const { sig: _sig, ...unsigned } = good;
      await kv.set(entry, unsigned);
      await assert.rejects(publish(), /not signed by the agent's enrolled key/);
    });

    await t.step("the agent re-enrolled with another key", async () => {
      await kv.set(entry, good);
      await publish();
      const next = await ed25519();
      await kv.set(gatewayAgentKey(id), {
        agentId: id,
        publicKey: next.raw.toBase64(B64U),
        roles: ["agent"],
      });
      await assert.rejects(publish(), /not the agent's enrolled key/);
    });
    await t0.close();
  } finally {
    kv.close();
  }
});
