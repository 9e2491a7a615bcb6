import assert from "node:assert/strict";
import { createTestKernel } from "../../core/testing.ts";
import hello, { type HelloApi } from "./hello.ts";

Deno.test("hello: greets over HTTP and counts greetings in its KV keyspace", async () => {
  await using t = await createTestKernel([hello], {
    pluginConfig: { hello: { greeting: "hi" } },
  });
  const res = await t.request("/plugins/hello/greet/ada");
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { message: "hi, ada" });
  await t.request("/plugins/hello/greet/ada");
  const count = await (await t.request("/plugins/hello/count/ada")).json();
  assert.deepEqual(count, { count: 2 });
  // The count lives under the plugin's own prefix, not at the root.
  const raw = await t.kv.get<Deno.KvU64>([
    "plugins",
    "hello",
    "greeted",
    "ada",
  ]);
  assert.equal(raw.value?.value, 2n);
  assert.equal((await t.kv.get(["greeted", "ada"])).value, null);
});

Deno.test("hello: answers requests on the router and exposes its api", async () => {
  await using t = await createTestKernel([hello]);
  assert.equal(await t.router.request("hello.requests", "bob"), "hello, bob");
  const api = t.kernel.get<HelloApi>("extension:hello");
  assert.equal(await api.greet("eve"), "hello, eve");
});

Deno.test("hello: failHealth makes /health degraded, not unhealthy", async () => {
  await using t = await createTestKernel([hello], {
    pluginConfig: { hello: { failHealth: true } },
  });
  const res = await t.request("/health");
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.status, "degraded");
  assert.equal(body.services.hello.status, "down");
  assert.equal(body.services.kv.status, "up");
});

Deno.test("hello: an unknown config field is refused before setup", async () => {
  await assert.rejects(
    createTestKernel([hello], { pluginConfig: { hello: { greting: "typo" } } }),
    /plugin 'hello' has invalid config: .*greting/,
  );
});

Deno.test("hello: stop unsubscribes from the router", async () => {
  const t = await createTestKernel([hello]);
  await t.close();
  assert.equal(t.router.publish("hello.requests", "x"), 0);
});
