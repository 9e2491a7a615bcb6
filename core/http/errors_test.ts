import assert from "node:assert/strict";
import { PlexusError } from "../errors.ts";
import { errorBody, plexusErrorResponse, statusCode } from "./errors.ts";

Deno.test("http errors: a PlexusError answers with its status, code and message", async () => {
  const res = plexusErrorResponse(
    new PlexusError("bad_request", "type 'X': expected a name", {
      status: 400,
    }),
  );
  assert.equal(res.status, 400);
  assert.equal(res.headers.get("Retry-After"), null);
  assert.deepEqual(
    await res.json(),
    errorBody(400, "type 'X': expected a name", "bad_request"),
  );
});

Deno.test("http errors: Retry-After only when the error is retryable and says how long", () => {
  const wait = { status: 503, retryAfterS: 1 };
  assert.equal(
    plexusErrorResponse(
      new PlexusError("unavailable", "no leader", { ...wait, retryable: true }),
    ).headers.get("Retry-After"),
    "1",
  );
  assert.equal(
    plexusErrorResponse(new PlexusError("unavailable", "no leader", wait))
      .headers.get("Retry-After"),
    null,
  );
});

Deno.test("http errors: a status without a name gets http_{status}", () => {
  assert.equal(statusCode(409), "conflict");
  assert.equal(statusCode(418), "http_418");
});
