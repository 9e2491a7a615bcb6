/**
 * The conformance suite through sealedTransport: the in-memory transport
 * with every topic sealed (`>`) to the one node, so every case's payloads
 * are encrypted, signed, checked and opened on the way.
 */
import {
  MemoryBroker,
  memoryTransport,
} from "../../testing/memory_transport.ts";
import { conformance } from "../../testing/conformance.ts";
import { generateKeyPair } from "../../core/security/hpke.ts";
import { sealedTransport } from "../../core/security/sealed_transport.ts";
import { kvSealingDirectory } from "../../core/security/sealing_keys.ts";

const broker = new MemoryBroker();
const kv = await Deno.openKv(":memory:");
const directory = kvSealingDirectory(kv);
const ed = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
  "sign",
  "verify",
]) as CryptoKeyPair;
const x25519 = await generateKeyPair();
await directory.publish(
  "node:n1",
  x25519.publicKey,
  new Uint8Array(await crypto.subtle.exportKey("raw", ed.publicKey)),
);
const keys = { id: "node:n1", signingKey: ed.privateKey, x25519, directory };

conformance(
  "memory, every topic sealed",
  () =>
    Promise.resolve(
      sealedTransport(
        memoryTransport({ broker }),
        { topics: [{ pattern: ">", recipients: ["node:n1"] }] },
        keys,
      ),
    ),
  { sanitize: false },
);
