/**
 * Test fixture: the task type `shop.step` for saga tests on real nodes.
 * Each run records itself in KV, independently of the saga state:
 *
 * - `["test", "sagas", "calls", stepKey, uuid]`: every call (a task run
 *   again after a crash counts twice);
 * - `["test", "sagas", "holding", sagaId, stepKey]`: set when a run with
 *   `holdMs` starts holding (the test kills a node then);
 * - `["test", "sagas", "effect", stepKey]` and
 *   `["test", "sagas", "log", sagaId, commitVersionstamp]` `{name, node}`:
 *   the effect, applied once per step key (the saga's idempotency key), in
 *   commit order.
 *
 * The step's payload `{name, fail?, holdMs?}` says what to record, whether
 * to fail, and how long to hold first.
 *
 * It also registers the task types docs/sagas.md's examples use
 * (`stock.reserve`, `stock.release`, `card.charge`, `card.refund`).
 *
 * @module
 */
import { definePlugin } from "../../core/plugin.ts";

interface Payload {
  saga: { id: string; idempotencyKey: string; compensating: boolean };
  input: { name: string; fail?: boolean; holdMs?: number };
}

export default definePlugin({
  manifest: {
    name: "saga-shop",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:saga-shop"],
    requires: ["state:kv"],
  },
  setup(ctx) {
    const kv = ctx.kernel.get("state:kv");
    const tasks = ctx.kernel.get("tasks:local");
    tasks.register("shop.step", async (raw) => {
      const { saga, input } = raw as Payload;
      const key = saga.idempotencyKey;
      // The node's KV retries "database is locked" from the other processes
      // sharing the file.
      await kv.set(["test", "sagas", "calls", key, crypto.randomUUID()], {
        node: ctx.node.id,
      });
      if (input.holdMs) {
        await kv.set(["test", "sagas", "holding", saga.id, key], {
          node: ctx.node.id,
        });
        await new Promise((r) => setTimeout(r, input.holdMs));
      }
      if (input.fail) throw new Error(`${input.name} refused`);
      await kv.atomic()
        .check({ key: ["test", "sagas", "effect", key], versionstamp: null })
        .set(["test", "sagas", "effect", key], { node: ctx.node.id })
        .set(["test", "sagas", "log", saga.id, kv.commitVersionstamp()], {
          name: input.name,
          node: ctx.node.id,
        })
        .commit();
      return { name: input.name };
    });
    // The types docs/sagas.md's examples name: a charge over 1,000 fails.
    for (const type of ["stock.reserve", "stock.release", "card.refund"]) {
      tasks.register(type, () => Promise.resolve({ [type]: "ok" }));
    }
    tasks.register("card.charge", (raw) => {
      const amount = (raw as { sagaInput?: { amount?: number } }).sagaInput
        ?.amount ?? 0;
      if (amount > 1000) {
        return Promise.reject(new Error(`card declined for ${amount}`));
      }
      return Promise.resolve({ charged: amount });
    });
    return Promise.resolve({ stop: () => Promise.resolve() });
  },
});
