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
import { sealedTransport } from "../../core/security/sealed_transport.ts";
import {
  freshSealingKeys,
  kvSealingDirectory,
} from "../../core/security/sealing_keys.ts";

const broker = new MemoryBroker();
const kv = await Deno.openKv(":memory:");
const directory = kvSealingDirectory(kv);
const keys = await freshSealingKeys("node:n1", directory);

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
