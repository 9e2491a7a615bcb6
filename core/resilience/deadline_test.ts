import assert from "node:assert/strict";
import { deadline } from "./deadline.ts";
import { TimeoutError } from "./errors.ts";

Deno.test("deadline: a promise settling first passes its value or error through", async () => {
  assert.equal(await deadline(Promise.resolve(1), 1000), 1);
  await assert.rejects(
    deadline(Promise.reject(new RangeError("bad")), 1000),
    RangeError,
  );
});

Deno.test("deadline: a promise still pending at the deadline rejects with the given error", async () => {
  await assert.rejects(
    deadline(new Promise(() => {}), 5, { error: () => new Error("slow") }),
    /^Error: slow$/,
  );
  await assert.rejects(deadline(new Promise(() => {}), 5), TimeoutError);
});
