import assert from "node:assert/strict";
import { openWorkerSandbox } from "./worker_host.ts";
import { createTestKernel } from "../testing.ts";
import { definePlugin, PlexusError } from "../plugin.ts";
import { loadAtTrust } from "./load.ts";
import { refusal } from "./capability_proxy.ts";

const CALC = new URL("./testdata/calc_plugin.ts", import.meta.url).href;
const BALANCER = new URL("./testdata/balancer_plugin.ts", import.meta.url)
  .href;

const NONE: Deno.PermissionOptionsObject = {
  read: false,
  write: false,
  net: false,
  env: false,
  sys: false,
  run: false,
  ffi: false,
  import: false,
};

/** A trusted plugin providing extension:ledger, and one using extension:calc. */
function neighbours() {
  const entries: unknown[] = [];
  const ledger = definePlugin({
    manifest: {
      name: "ledger",
      version: "1.2.0",
      kind: "extension",
      api: "^1",
      provides: ["extension:ledger"],
    },
    setup: () =>
      Promise.resolve({
        api: {
          record(entry: unknown) {
            return entries.push(entry);
          },
          total: () => entries.length,
          refuse() {
            throw new PlexusError("ledger_full", "the ledger is full", {
              status: 409,
            });
          },
          callback: () => () => 1,
        },
        stop: () => Promise.resolve(),
      }),
  });
  const user = definePlugin({
    manifest: {
      name: "user",
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: ["extension:user"],
      requires: ["extension:calc"],
    },
    setup(ctx) {
      const calc = ctx.kernel.get<Record<string, (...a: unknown[]) => unknown>>(
        "extension:calc",
      );
      ctx.http.get("/use", async (c) => {
        const out: Record<string, unknown> = { sum: await calc.add(2, 3) };
        for (
          const [k, f] of Object.entries({
            boom: () => calc.boom(),
            apply: () => calc.apply(() => 1),
            later: () => calc.later(),
          })
        ) {
          try {
            await f();
          } catch (err) {
            const e = err as Error & { code?: string; status?: number };
            out[k] = {
              name: e.name,
              code: e.code,
              status: e.status,
              message: e.message,
            };
          }
        }
        return c.json(out);
      });
      return Promise.resolve({ stop: () => Promise.resolve() });
    },
  });
  return { ledger, user, entries };
}

Deno.test("sandbox capabilities: a sandboxed plugin's kernel.get of a required capability calls the provider's api across; errors keep code and status; functions are refused naming the method", async () => {
  const { ledger, user, entries } = neighbours();
  const sandbox = await openWorkerSandbox(CALC, { permissions: NONE });
  await using t = await createTestKernel([ledger, sandbox.plugin, user]);
  const get = async (path: string) =>
    await (await t.request(`/plugins/calc${path}`)).json();
  assert.deepEqual(await get("/record"), {
    ok: true,
    value: { n: 1, total: 1 },
  });
  assert.deepEqual(entries, [{ from: "calc" }]);
  const refused = await get("/refused");
  assert.equal(refused.code, "ledger_full");
  assert.equal(refused.status, 409);
  assert.equal(refused.message, "the ledger is full");
  const arg = await get("/function-argument");
  assert.equal(arg.error, "TypeError");
  assert.match(
    arg.message,
    /^extension:ledger record\(\): an argument cannot cross the sandbox/,
  );
  const result = await get("/function-result");
  assert.equal(result.error, "TypeError");
  assert.match(
    result.message,
    /^extension:ledger callback\(\): its result cannot cross the sandbox/,
  );
  assert.deepEqual(await get("/router"), { ok: true, value: true });
  // Required with a range (extension:ledger@^1), and kernel.has knows it.
  assert.deepEqual(await get("/has"), { ledger: true });
  const undeclared = await get("/undeclared");
  assert.equal(undeclared.error, "SandboxUnavailable");
  assert.match(undeclared.message, /not in the manifest's requires/);
});

Deno.test("sandbox capabilities: the node's kernel.get of a capability a sandboxed plugin provides calls into its sandbox", async () => {
  const { ledger, user } = neighbours();
  const sandbox = await openWorkerSandbox(CALC, { permissions: NONE });
  await using t = await createTestKernel([ledger, sandbox.plugin, user]);
  const calc = t.kernel.get<
    Record<string, (...a: unknown[]) => Promise<unknown>>
  >(
    "extension:calc",
  );
  assert.deepEqual(Object.keys(calc).sort(), ["add", "apply", "boom", "later"]);
  assert.equal(await calc.add(20, 22), 42);
  const used = await (await t.request("/plugins/user/use")).json();
  assert.equal(used.sum, 5);
  assert.deepEqual(
    {
      code: used.boom.code,
      status: used.boom.status,
      message: used.boom.message,
    },
    { code: "calc_boom", status: 418, message: "calc refused" },
  );
  assert.equal(used.apply.name, "TypeError");
  assert.match(
    used.apply.message,
    /^extension:calc apply\(\): an argument cannot cross/,
  );
  assert.equal(used.later.name, "TypeError");
  assert.match(
    used.later.message,
    /^extension:calc later\(\): its result cannot cross/,
  );
});

Deno.test("sandbox capabilities: a sandboxed plugin calls a capability another sandboxed plugin provides, through the node", async () => {
  const { ledger } = neighbours();
  const calc = await openWorkerSandbox(CALC, { permissions: NONE });
  const user = await openWorkerSandbox(
    new URL("./testdata/calc_user_plugin.ts", import.meta.url).href,
    { permissions: NONE },
  );
  await using t = await createTestKernel([ledger, calc.plugin, user.plugin]);
  const res = await t.request("/plugins/calc-user/sum");
  assert.deepEqual(await res.json(), { sum: 42 });
});

Deno.test("sandbox capabilities: the raw KV, the node's key and synchronous contracts are refused inside; a balancer is refused at load at the worker level", async () => {
  assert.match(refusal("state:kv")!, /run it trusted/);
  assert.match(refusal("node:key")!, /run it trusted/);
  assert.match(refusal("consensus:*")!, /consensus contract is synchronous/);
  assert.match(
    refusal("transport:redis")!,
    /transport contract is synchronous/,
  );
  assert.equal(refusal("extension:calc"), undefined);
  await assert.rejects(
    loadAtTrust(BALANCER, { pluginTrust: { "sync-balancer": "worker" } }),
    /plugin 'sync-balancer' is a balancer: that contract is synchronous and on the node's hot path.*run it trusted \(--plugin-trust sync-balancer=trusted, or pluginTrust: \{"sync-balancer": "trusted"\}/,
  );
  const trusted = await loadAtTrust(BALANCER, {
    pluginTrust: { "sync-balancer": "trusted" },
  });
  assert.equal(trusted.trust, "trusted");
});
