import assert from "node:assert/strict";
import { connectNats, type NatsTransport } from "./transport.ts";
import { TransportError } from "../../core/transport.ts";
import { createServiceBroker } from "../../core/services.ts";
import { NATS_CLI, natsCli } from "./_test_util.ts";
import { z } from "zod";

const url = Deno.env.get("NATS_URL");
const opts = { ignore: !url, sanitizeOps: false, sanitizeResources: false };
const topic = () => `rr${crypto.randomUUID().slice(0, 8)}.get`;

async function waitFor(what: string, ok: () => boolean, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function pair(): Promise<
  [NatsTransport, NatsTransport] & AsyncDisposable
> {
  const a = await connectNats({ nodeId: "a", mode: "core", announceMs: 100 });
  const b = await connectNats({ nodeId: "b", mode: "core", announceMs: 100 });
  await waitFor(
    "a and b to know each other",
    () => a.nodes().length === 2 && b.nodes().length === 2,
  );
  return Object.assign([a, b] as [NatsTransport, NatsTransport], {
    async [Symbol.asyncDispose]() {
      await Promise.all([a.close(), b.close()]);
    },
  });
}

Deno.test(
  "nats request/reply: respond resolves once the other nodes list the responder",
  opts,
  async () => {
    await using nodes = await pair();
    const [a, b] = nodes;
    // b knows a (pair() waited), so its respond waits for a's ack.
    const t = topic();
    await b.respond(t, (body) => Promise.resolve(body));
    assert.deepEqual(a.responders(t), ["b"]);
    assert.deepEqual(await a.request("b", t, { x: 1 }, { timeoutMs: 2000 }), {
      x: 1,
    });
  },
);

Deno.test(
  "nats request/reply: a SIGKILLed node's responder drops out: at once when NATS answers no-responders, else when its entry expires",
  opts,
  async () => {
    const t = topic();
    const a = await connectNats({ nodeId: "a", mode: "core", announceMs: 100 });
    try {
      for (const withRequest of [true, false]) {
        const child = new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "--allow-net",
            "--allow-env",
            "--allow-read",
            new URL("./_rr_child.ts", import.meta.url).pathname,
            "victim",
            t,
          ],
          stdout: "piped",
          stderr: "inherit",
        }).spawn();
        const reader = child.stdout.pipeThrough(new TextDecoderStream())
          .getReader();
        assert.match((await reader.read()).value ?? "", /ready/);
        await waitFor(
          "a to see the victim",
          () => a.responders(t).includes("victim"),
        );
        assert.deepEqual(
          await a.request("victim", t, 7, { timeoutMs: 2000 }),
          { on: "victim", body: 7 },
        );
        child.kill("SIGKILL");
        await child.status;
        await reader.cancel();
        if (withRequest) {
          // Until nats-server has seen the dead connection close, a request
          // still goes to its subscription and ends at the deadline; after,
          // the server answers "no responders" at once. Either way it
          // rejects, and the entry goes.
          await assert.rejects(
            a.request("victim", t, 8, { timeoutMs: 500 }),
            (err) =>
              (err instanceof TransportError && err.code === "unavailable" &&
                /victim/.test(err.message)) ||
              (err as Error).name === "TimeoutError",
          );
        }
        // The directory entry goes at once on "no responders", else when it
        // expires (3 × announceMs without an announcement).
        await waitFor(
          "the victim to drop out",
          () => !a.responders(t).includes("victim"),
          3000,
        );
      }
    } finally {
      await a.close();
    }
  },
);

Deno.test(
  "nats request/reply: a request to a node that does not answer the topic is 'unavailable' at once (NATS's no-responders), not a timeout",
  opts,
  async () => {
    await using nodes = await pair();
    const [a] = nodes;
    const t0 = Date.now();
    await assert.rejects(
      a.request("b", topic(), 1, { timeoutMs: 10_000 }),
      (err) =>
        err instanceof TransportError && err.code === "unavailable" &&
        /no responder/.test(err.message),
    );
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
  },
);

Deno.test(
  "nats request/reply: service calls between two nodes over NATS",
  opts,
  async () => {
    await using nodes = await pair();
    const [a, b] = nodes;
    const ba = createServiceBroker({ nodeId: "a" });
    const bb = createServiceBroker({ nodeId: "b" });
    await ba.attach(a);
    await bb.attach(b);
    try {
      const name = `${topic().replace(".get", "")}.create`;
      await bb.define(
        name,
        z.strictObject({ sku: z.string() }),
        (p, call) => ({ ...p, on: "b", caller: call.caller }),
      );
      await waitFor("a to list the action", () =>
        a.listResponders().size > 0 &&
        [...a.listResponders().values()].some((n) => n.includes("b")));
      assert.deepEqual(await ba.call(name, { sku: "x" }), {
        sku: "x",
        on: "b",
        caller: "a",
      });
    } finally {
      await ba.close();
      await bb.close();
    }
  },
);

Deno.test(
  "nats request/reply: the nats CLI calls a Plexus responder in the documented layout",
  {
    ...opts,
    ignore: !url || !NATS_CLI,
  },
  async () => {
    await using nodes = await pair();
    const [, b] = nodes;
    const t = topic();
    await b.respond(
      t,
      (body, info) =>
        Promise.resolve({ body, from: info.from, h: info.headers }),
    );
    const subject = `plexus._rr.req.${btoa("b").replaceAll("=", "")}.${t}`;
    const out = await natsCli([
      "request",
      "--raw",
      "-H",
      "plexus-rr-from:cli",
      "-H",
      "cid:42",
      subject,
      JSON.stringify({ b: { hello: "nats" } }),
    ]);
    assert.deepEqual(JSON.parse(out.trim()), {
      ok: true,
      v: { body: { hello: "nats" }, from: "cli", h: { cid: "42" } },
    });
  },
);

Deno.test(
  "nats request/reply: a body or a reply over the server's max_payload is refused at once, and the connection goes on",
  opts,
  async () => {
    await using nodes = await pair();
    const [a, b] = nodes;
    const t = topic();
    const big = "x".repeat(2 * 1024 * 1024); // NATS's default max_payload is 1 MiB
    await b.respond(t, (body) => Promise.resolve(body === "big" ? big : body));
    const started = Date.now();
    await assert.rejects(
      () => a.request("b", t, big, { timeoutMs: 5000 }),
      (err: unknown) =>
        err instanceof TransportError && err.code === "too_large" &&
        /it is \d{7} bytes, over the \d+ a message may carry here/.test(
          err.message,
        ),
    );
    // The responder says so instead of leaving the caller to its deadline.
    await assert.rejects(
      () => a.request("b", t, "big", { timeoutMs: 5000 }),
      (err: unknown) =>
        err instanceof TransportError && err.code === "bad_message" &&
        /the reply is \d{7} bytes, over the \d+ a message may carry here/
          .test(err.message),
    );
    assert.ok(Date.now() - started < 4000, "waited for a deadline");
    // Both connections still carry requests.
    assert.equal(
      await a.request("b", t, "small", { timeoutMs: 2000 }),
      "small",
    );
    await a.respond(t, (body) => Promise.resolve(body));
    assert.equal(await b.request("a", t, 1, { timeoutMs: 2000 }), 1);
  },
);
