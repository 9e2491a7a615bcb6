import assert from "node:assert/strict";
import { PlexusError } from "./errors.ts";
import { TaskInputError } from "./tasks.ts";
import { TimeoutError } from "./resilience/errors.ts";
import { TransportError } from "./transport.ts";

Deno.test("errors: a PlexusError defaults to a non-retryable 500 and keeps its cause", () => {
  const cause = new Error("disk");
  const err = new PlexusError("internal", "write failed", { cause });
  assert.equal(err.status, 500);
  assert.equal(err.retryable, false);
  assert.equal(err.cause, cause);
  assert.equal(err.name, "PlexusError");
});

Deno.test("errors: the typed families are PlexusErrors with their own name, code and status", () => {
  const cases: [PlexusError, string, string, number, boolean][] = [
    [new TaskInputError("bad"), "TaskInputError", "bad_request", 400, false],
    [new TimeoutError("x", 5), "TimeoutError", "timeout", 504, true],
    [
      new TransportError("too_large", "big"),
      "TransportError",
      "too_large",
      413,
      false,
    ],
    [
      new TransportError("unavailable", "down"),
      "TransportError",
      "unavailable",
      503,
      true,
    ],
  ];
  for (const [err, name, code, status, retryable] of cases) {
    assert.ok(err instanceof PlexusError, name);
    assert.deepEqual(
      [err.name, err.code, err.status, err.retryable],
      [name, code, status, retryable],
    );
  }
});
