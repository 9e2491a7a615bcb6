import assert from "node:assert/strict";
import {
  MemoryBroker,
  type MemoryFaults,
  memoryTransport,
  stopBroker,
} from "../../testing/memory_transport.ts";
import { CASES, conformance } from "../../testing/conformance.ts";

const broker = new MemoryBroker();
conformance(
  "memory (test fake)",
  () => Promise.resolve(memoryTransport({ broker })),
);

function caseNamed(fragment: string) {
  const c = CASES.find((c) => c.name.includes(fragment));
  if (!c) throw new Error(`no conformance case matching '${fragment}'`);
  return c;
}

/** Runs one case against a fake with `faults`; it must fail with `expected`. */
async function mustFail(
  fragment: string,
  faults: MemoryFaults,
  expected: string,
) {
  const b = new MemoryBroker();
  try {
    await assert.rejects(
      () =>
        caseNamed(fragment).run(
          () => Promise.resolve(memoryTransport({ broker: b, faults })),
          3000,
        ),
      (err: Error) => {
        assert.ok(
          err.message.includes(expected),
          `failed for another reason: ${err.message}`,
        );
        return true;
      },
    );
  } finally {
    stopBroker(b);
  }
}

Deno.test("conformance: a transport that double-delivers within a group fails the group case", () =>
  mustFail(
    "one group shares the work",
    { doubleDeliverInGroup: true },
    "delivered more than once in group 'workers'",
  ));

Deno.test("conformance: a transport that ignores the size limit fails the size case", () =>
  mustFail("maxMessageBytes", { ignoreSizeLimit: true }, "was accepted"));

Deno.test("conformance: a transport that ignores the nak delay fails the nak case", () =>
  mustFail(
    "nak with a delay",
    { ignoreNakDelay: true },
    "before the 300 ms delay",
  ));

Deno.test("conformance: a transport that loses dead letters fails the term and max-attempts cases", async () => {
  await mustFail("term sends", { dropDeadLetters: true }, "Timed out");
  await mustFail("maxAttempts", { dropDeadLetters: true }, "Timed out");
});

Deno.test("conformance: a transport that ignores keys fails the per-key ordering case", () =>
  mustFail("one key", { ignoreKeys: true }, "key '"));

Deno.test("conformance: a transport that drops request headers fails the request/reply case", () =>
  mustFail(
    "request/reply: a request reaches",
    { dropRequestHeaders: true },
    "lost its headers",
  ));

Deno.test("conformance: a transport that lets a request outlive its deadline fails the request/reply deadline case", () =>
  mustFail(
    "request/reply: a failing responder",
    { ignoreRequestTimeout: true },
    "Timed out",
  ));
