import assert from "node:assert/strict";
import { z } from "zod";
import { startMesh } from "../../transports/websocket-mesh/mod.ts";
import type { MeshTransport } from "../../transports/websocket-mesh/mesh.ts";
import {
  createServiceBroker,
  type ServiceBroker,
} from "../../core/services.ts";
import { ServiceError } from "../../core/services_errors.ts";
import { PlexusError } from "../../core/errors.ts";
import { TimeoutError } from "../../core/resilience/errors.ts";
import { TransportError } from "../../core/transport.ts";

const SECRET = "services-test-secret-0123";

interface Node {
  id: string;
  mesh: MeshTransport;
  broker: ServiceBroker;
}

async function cluster(n: number): Promise<Node[] & AsyncDisposable> {
  const nodes: Node[] = [];
  for (let i = 0; i < n; i++) {
    const id = `n${i}`;
    const mesh = await startMesh({
      nodeId: id,
      secret: SECRET,
      peers: nodes.map((p) => p.mesh.url),
    });
    const broker = createServiceBroker({ nodeId: id });
    await broker.attach(mesh);
    nodes.push({ id, mesh, broker });
  }
  // Every node linked to every other.
  const deadline = Date.now() + 5000;
  while (nodes.some((p) => p.mesh.connectedPeers().length < n - 1)) {
    if (Date.now() > deadline) throw new Error("mesh did not link");
    await new Promise((r) => setTimeout(r, 5));
  }
  return Object.assign(nodes, {
    async [Symbol.asyncDispose]() {
      await Promise.all(nodes.map(async (p) => {
        await p.broker.close();
        await p.mesh.close();
      }));
    },
  });
}

const order = z.strictObject({ sku: z.string().min(1), qty: z.number().int() });

Deno.test("services: a call runs on the node that defined the action and answers across the mesh", async () => {
  await using nodes = await cluster(2);
  const [a, b] = nodes;
  await b.broker.define("orders.create", order, (p, call) => ({
    ...p,
    on: b.id,
    caller: call.caller,
  }));
  const got = await a.broker.call("orders.create", { sku: "x", qty: 2 });
  assert.deepEqual(got, { sku: "x", qty: 2, on: "n1", caller: "n0" });
  assert.deepEqual((await a.broker.list()).map((i) => [i.name, i.nodes]), [[
    "orders.create",
    ["n1"],
  ]]);
});

Deno.test("services: params the schema refuses are a ServiceError 'invalid_params' (400) naming the field, locally and remotely", async () => {
  await using nodes = await cluster(2);
  const [a, b] = nodes;
  let ran = 0;
  await b.broker.define("orders.create", order, () => ++ran);
  for (const caller of [a, b]) {
    await assert.rejects(
      caller.broker.call("orders.create", { sku: "", qty: 1.5 }),
      (err) => {
        assert.ok(err instanceof ServiceError, String(err));
        assert.equal(err.code, "invalid_params");
        assert.equal(err.status, 400);
        assert.match(err.message, /sku: .*qty: /);
        return true;
      },
    );
  }
  assert.equal(ran, 0);
});

Deno.test("services: an action nobody offers is a ServiceError 'service_not_found' (404)", async () => {
  await using nodes = await cluster(2);
  await assert.rejects(
    nodes[0].broker.call("orders.nowhere", {}),
    (err) =>
      err instanceof ServiceError && err.code === "service_not_found" &&
      err.status === 404 && /orders\.nowhere/.test(err.message),
  );
});

class OutOfStock extends PlexusError {
  override name = "OutOfStock";
}

Deno.test("services: an error the action throws keeps its class, code, status and data on the calling node", async () => {
  await using nodes = await cluster(2);
  const [a, b] = nodes;
  const { registerErrorType } = await import("../../core/services_errors.ts");
  registerErrorType("OutOfStock", OutOfStock);
  await b.broker.define("stock.take", z.string(), (sku) => {
    if (sku === "timeout") throw new TimeoutError("warehouse", 5);
    if (sku === "type") throw new TypeError("not a sku");
    throw new OutOfStock("out_of_stock", `no ${sku} left`, {
      status: 409,
      data: { sku },
    });
  });
  await assert.rejects(a.broker.call("stock.take", "a-1"), (err) => {
    assert.ok(err instanceof OutOfStock, `got ${err}`);
    assert.ok(err instanceof PlexusError);
    assert.equal(err.code, "out_of_stock");
    assert.equal(err.status, 409);
    assert.deepEqual(err.data, { sku: "a-1", node: "n1" });
    assert.equal(err.message, "no a-1 left");
    return true;
  });
  await assert.rejects(
    a.broker.call("stock.take", "timeout"),
    (err) => err instanceof TimeoutError && err.code === "timeout",
  );
  await assert.rejects(
    a.broker.call("stock.take", "type"),
    (err) => err instanceof TypeError && err.message === "not a sku",
  );
});

Deno.test("services: calls with one key go to one node; without a key both nodes serve", async () => {
  await using nodes = await cluster(3);
  const [a, b, c] = nodes;
  for (const n of [b, c]) {
    await n.broker.define("cart.touch", z.unknown(), () => n.id);
  }
  for (const key of ["k1", "k2", "k3", "k4", "k5"]) {
    const first = await a.broker.call("cart.touch", null, { key });
    for (let i = 0; i < 10; i++) {
      assert.equal(await a.broker.call("cart.touch", null, { key }), first);
    }
  }
  const seen = new Set();
  for (let i = 0; i < 40; i++) seen.add(await a.broker.call("cart.touch", 0));
  assert.deepEqual([...seen].sort(), ["n1", "n2"]);
  assert.equal(
    await a.broker.call("cart.touch", 0, { nodeId: "n2" }),
    "n2",
  );
});

Deno.test("services: a local action runs without serialising, still checked by its schema", async () => {
  await using nodes = await cluster(2);
  const [a, b] = nodes;
  const param = { sku: "x", qty: 1 };
  let seen: unknown;
  await a.broker.define("orders.create", order, (p) => (seen = p));
  await b.broker.define("orders.create", order, () => "remote");
  await a.broker.call("orders.create", param);
  // zod's strictObject returns a copy; a serialised copy would be too, so
  // compare a nested object identity instead.
  const nested = { when: new Date(0) };
  await a.broker.define("time.echo", z.object({ when: z.date() }), (p) => p);
  const back = await a.broker.call<{ when: Date }>("time.echo", nested);
  assert.ok(back.when instanceof Date, "a Date crossed without JSON");
  assert.deepEqual(seen, param);
});

Deno.test("services: the correlation id and trace id travel with a call and on to its nested calls", async () => {
  await using nodes = await cluster(3);
  const [a, b, c] = nodes;
  const seen: { cid: string; tp: string }[] = [];
  await c.broker.define("audit.log", z.unknown(), (_p, call) => {
    seen.push({ cid: call.correlationId, tp: call.traceparent });
    return "logged";
  });
  await b.broker.define("orders.create", z.unknown(), async (_p, call) => {
    seen.push({ cid: call.correlationId, tp: call.traceparent });
    return await call.call("audit.log", {});
  });
  const traceparent = `00-${"ab".repeat(16)}-${"cd".repeat(8)}-01`;
  assert.equal(
    await a.broker.call("orders.create", {}, {
      correlationId: "req-42",
      traceparent,
    }),
    "logged",
  );
  assert.equal(seen.length, 2);
  for (const s of seen) {
    assert.equal(s.cid, "req-42");
    assert.equal(s.tp.split("-")[1], "ab".repeat(16));
  }
  assert.notEqual(seen[0].tp.split("-")[2], "cd".repeat(8), "a new span");
  assert.notEqual(seen[0].tp, seen[1].tp, "the nested call is its own span");
});

Deno.test("services: a node whose link drops mid-call is retried on another node; without retries the caller gets a retryable TransportError", async () => {
  await using nodes = await cluster(3);
  const [a, b, c] = nodes;
  const started = Promise.withResolvers<void>();
  await b.broker.define("jobs.run", z.unknown(), () => {
    started.resolve();
    return new Promise(() => {}); // hangs until its node goes
  });
  await c.broker.define("jobs.run", z.unknown(), () => "c");
  // The first pick is b (its circuit is the same as c's; force it).
  const call = a.broker.call("jobs.run", 1, { nodeId: "n1", timeout: 5000 });
  await started.promise;
  const failed = assert.rejects(call, (err) => {
    assert.ok(err instanceof TransportError, String(err));
    assert.equal(err.code, "unavailable");
    assert.equal(err.retryable, true);
    assert.match(err.message, /n1.*before it answered/);
    return true;
  });
  await b.mesh.close();
  await failed;
  assert.deepEqual((await a.broker.list())[0].nodes, ["n2"]);
  assert.equal(await a.broker.call("jobs.run", 1, { retries: 2 }), "c");
});

Deno.test("services: a call that outlives its timeout is a TimeoutError (504)", async () => {
  await using nodes = await cluster(2);
  const [a, b] = nodes;
  await b.broker.define(
    "slow.op",
    z.unknown(),
    () => new Promise((r) => setTimeout(r, 300)),
  );
  const t0 = performance.now();
  await assert.rejects(
    a.broker.call("slow.op", 1, { timeout: 50 }),
    (err) => err instanceof TimeoutError && err.status === 504,
  );
  assert.ok(performance.now() - t0 < 250, "the caller did not wait");
});

Deno.test("services: calls work over any transport declaring request/reply (the in-memory fake), and one without it is refused by name", async () => {
  const { MemoryBroker, memoryTransport, stopBroker } = await import(
    "../../testing/memory_transport.ts"
  );
  const shared = new MemoryBroker();
  const ta = memoryTransport({ broker: shared, nodeId: "a" });
  const tb = memoryTransport({ broker: shared, nodeId: "b" });
  const a = createServiceBroker({ nodeId: "a" });
  const b = createServiceBroker({ nodeId: "b" });
  try {
    await a.attach(ta);
    await b.attach(tb);
    await b.define("math.double", z.number(), (n) => n * 2);
    assert.equal(await a.call("math.double", 21), 42);
    await assert.rejects(
      a.call("math.double", "x"),
      (err) => err instanceof ServiceError && err.code === "invalid_params",
    );
    const plain = { ...ta, caps: { ...ta.caps, requestReply: false } };
    await assert.rejects(
      createServiceBroker({ nodeId: "c" }).attach(plain),
      /Cannot call services over transport 'memory': it does not declare request\/reply/,
    );
  } finally {
    await Promise.all([a.close(), b.close(), ta.close(), tb.close()]);
    stopBroker(shared);
  }
});

Deno.test("services: calls are counted by action and result, and the broker's circuits carry their own label", async () => {
  const { createMetrics } = await import("../../core/observe/metrics.ts");
  const { MemoryBroker, memoryTransport, stopBroker } = await import(
    "../../testing/memory_transport.ts"
  );
  const shared = new MemoryBroker();
  const ta = memoryTransport({ broker: shared, nodeId: "a" });
  const tb = memoryTransport({ broker: shared, nodeId: "b" });
  const metrics = createMetrics("plexus_");
  const a = createServiceBroker({ nodeId: "a", metrics });
  const b = createServiceBroker({ nodeId: "b" });
  try {
    await a.attach(ta);
    await b.attach(tb);
    await b.define("math.half", z.number(), (n) => {
      if (n % 2) throw new Error("odd");
      return n / 2;
    });
    assert.equal(await a.call("math.half", 4), 2);
    await assert.rejects(a.call("math.half", 3), /odd/);
    const text = metrics.render();
    assert.match(
      text,
      /plexus_service_calls_total\{action="math\.half",result="ok"\} 1/,
    );
    assert.match(
      text,
      /plexus_service_calls_total\{action="math\.half",result="error"\} 1/,
    );
    assert.match(
      text,
      /plexus_circuit_calls_total\{breakers="services",endpoint="b",result="failure"\} 1/,
    );
  } finally {
    await Promise.all([a.close(), b.close(), ta.close(), tb.close()]);
    stopBroker(shared);
  }
});
