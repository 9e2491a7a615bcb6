import assert from "node:assert/strict";
import { type RaftLinks, startLinks } from "./links.ts";
import type { Message } from "./types.ts";

const SECRET = "0123456789abcdef-test";

function serveLinks(
  id: string,
  secret: string,
  got: (from: string, ms: Message[]) => void,
): { links: RaftLinks; url: string; close: () => Promise<void> } {
  const box: { links?: RaftLinks } = {};
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req) => box.links!.handleUpgrade(req),
  );
  const url = `http://127.0.0.1:${server.addr.port}`;
  const links = startLinks({
    id,
    address: url,
    secret,
    peers: [],
    onMessages: got,
  });
  box.links = links;
  return {
    links,
    url,
    close: async () => {
      links.close();
      await server.shutdown();
    },
  };
}

const wait = async (cond: () => boolean, what: string) => {
  for (let i = 0; i < 200; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
};

Deno.test("raft links: a peer's id is learned at the handshake and its batches arrive", async () => {
  const got: [string, Message[]][] = [];
  const b = serveLinks("b", SECRET, (f, ms) => got.push([f, ms]));
  const a = startLinks({
    id: "a",
    address: "http://a.example",
    secret: SECRET,
    peers: [b.url],
    onMessages: () => {},
  });
  try {
    await wait(() => a.peers().some((p) => p.connected), "a linked to b");
    assert.deepEqual(a.peers(), [{ id: "b", address: b.url, connected: true }]);
    await wait(() => b.links.peers().length > 0, "b to learn a");
    assert.equal(b.links.peers()[0].address, "http://a.example");
    assert.equal(
      a.send("b", [
        { type: "heartbeat", from: "a", to: "b", term: 2 },
        // Claims to come from someone else: dropped.
        { type: "heartbeat", from: "c", to: "b", term: 9 },
      ]),
      true,
    );
    await wait(() => got.length > 0, "the batch");
    assert.deepEqual(got, [["a", [{
      type: "heartbeat",
      from: "a",
      to: "b",
      term: 2,
    }]]]);
    assert.equal(a.send("zz", []), false);
  } finally {
    a.close();
    await b.close();
  }
});

Deno.test("raft links: a node with the wrong secret never gets a link", async () => {
  const got: Message[][] = [];
  const b = serveLinks("b", SECRET, (_f, ms) => got.push(ms));
  const a = startLinks({
    id: "a",
    address: "http://a.example",
    secret: "another-secret-of-16",
    peers: [b.url],
    onMessages: () => {},
    reconnectMs: 20,
  });
  try {
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(
      a.send("b", [{ type: "heartbeat", from: "a", to: "b", term: 1 }]),
      false,
    );
    assert.deepEqual(b.links.peers(), []);
    assert.equal(got.length, 0);
  } finally {
    a.close();
    await b.close();
  }
});

Deno.test("raft links: a short secret is refused", () => {
  assert.throws(
    () =>
      startLinks({
        id: "a",
        address: "",
        secret: "short",
        peers: [],
        onMessages: () => {},
      }),
    /at least 16 characters, got 5/,
  );
});

Deno.test("raft links: a peer dialed at runtime links, and control values reach its onControl", async () => {
  const control: [string, unknown][] = [];
  const box: { links?: RaftLinks } = {};
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req) => box.links!.handleUpgrade(req),
  );
  const url = `http://127.0.0.1:${server.addr.port}`;
  box.links = startLinks({
    id: "b",
    address: url,
    secret: SECRET,
    peers: [],
    onMessages: () => {},
    onControl: (from, d) => control.push([from, d]),
  });
  const a = startLinks({
    id: "a",
    address: "http://a.example",
    secret: SECRET,
    peers: [],
    onMessages: () => {},
  });
  try {
    assert.equal(a.control("b", { k: "x" }), false);
    a.dial(url);
    a.dial(url + "/"); // the same origin: not dialed twice
    await wait(() => a.peers().some((p) => p.connected), "a linked to b");
    assert.equal(a.control("b", { k: "peer", url: "http://c" }), true);
    await wait(() => control.length > 0, "the control value");
    assert.deepEqual(control, [["a", { k: "peer", url: "http://c" }]]);
  } finally {
    a.close();
    box.links.close();
    await server.shutdown();
  }
});

Deno.test("raft links: a forgotten URL is not redialed", async () => {
  let attempts = 0;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => {
      attempts++;
      return new Response("no", { status: 503 });
    },
  );
  const url = `http://127.0.0.1:${server.addr.port}`;
  const a = startLinks({
    id: "a",
    address: "http://a.example",
    secret: SECRET,
    peers: [],
    onMessages: () => {},
    reconnectMs: 10,
  });
  try {
    a.dial(url);
    await wait(() => attempts >= 2, "two dial attempts");
    a.forget(url);
    // At most the attempt already under way still arrives.
    const seen = attempts;
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(attempts <= seen + 1, `${attempts - seen} attempts after forget`);
  } finally {
    a.close();
    await server.shutdown();
  }
});
