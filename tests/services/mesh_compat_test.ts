import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { startMesh } from "../../transports/websocket-mesh/mod.ts";
import { TransportError } from "../../core/transport.ts";

const SECRET = "mesh-compat-secret-0123456789";

/**
 * A peer speaking the mesh as it was before request/reply: its `auth`
 * carries no `serves`. Records every frame it gets.
 */
async function oldPeer(url: string, id: string) {
  const frames: { t: string }[] = [];
  const ws = new WebSocket(url);
  const linked = Promise.withResolvers<void>();
  const nonce = crypto.randomUUID();
  ws.onopen = () => ws.send(JSON.stringify({ t: "hello", node: id, nonce }));
  ws.onmessage = (ev) => {
    const f = JSON.parse(ev.data);
    frames.push(f);
    if (f.t === "hello") {
      const mac = createHmac("sha256", SECRET)
        .update(`plexus-mesh|${f.nonce}|${id}`).digest("base64url");
      ws.send(JSON.stringify({ t: "auth", mac, subs: [] }));
    }
    if (f.t === "auth") linked.resolve();
  };
  await linked.promise;
  const closed = new Promise((r) => (ws.onclose = r));
  return {
    frames,
    async close() {
      ws.close();
      await closed;
    },
  };
}

Deno.test("mesh: a peer without request/reply (no 'serves' in its auth) gets no srv or req frames, and a request to it fails at once", async () => {
  const mesh = await startMesh({ nodeId: "new", secret: SECRET });
  const old = await oldPeer(mesh.url, "old");
  try {
    const deadline = Date.now() + 5000;
    while (!mesh.connectedPeers().includes("old")) {
      if (Date.now() > deadline) throw new Error("the old peer did not link");
      await new Promise((r) => setTimeout(r, 5));
    }
    const responder = await mesh.respond!("svc.a.b", () => Promise.resolve(1));
    await responder.close();
    await assert.rejects(
      mesh.request!("old", "svc.a.b", 1, { timeoutMs: 5000 }),
      (err) =>
        err instanceof TransportError && err.code === "unavailable" &&
        /without request\/reply/.test(err.message),
    );
    // The link is still up: the old peer was sent nothing it cannot read.
    assert.deepEqual(mesh.connectedPeers(), ["old"]);
    assert.deepEqual(old.frames.map((f) => f.t), ["hello", "auth"]);
  } finally {
    await old.close();
    await mesh.close();
  }
});
