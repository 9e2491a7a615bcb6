import assert from "node:assert/strict";
import { PlexusError } from "../../core/errors.ts";
import { jsonObjectBody, kvFailure } from "./kv_routes.ts";

class NotPlaced extends PlexusError {
  constructor() {
    super("unavailable", "not placed", { status: 503, retryable: true });
  }
}
const isAnswer = (e: unknown): e is PlexusError => e instanceof NotPlaced;

Deno.test("kv routes: a plugin's own error is its answer, a bad body a 400, anything else is rethrown", async () => {
  const placed = kvFailure(new NotPlaced(), isAnswer);
  assert.equal(placed.status, 503);
  assert.match(JSON.stringify(await placed.json()), /not placed/);
  for (const body of ["[1]", "nope", "null"]) {
    const req = new Request("http://x/", { method: "PUT", body });
    const err = await jsonObjectBody(req).catch((e) => e);
    assert.ok(err instanceof TypeError, body);
    assert.equal(kvFailure(err, isAnswer).status, 400);
  }
  assert.deepEqual(
    await jsonObjectBody(
      new Request("http://x/", { method: "PUT", body: '{"value":"v"}' }),
    ),
    { value: "v" },
  );
  const bug = new RangeError("a bug");
  assert.throws(() => kvFailure(bug, isAnswer), (e) => e === bug);
});
