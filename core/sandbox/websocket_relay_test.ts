import assert from "node:assert/strict";
import {
  openWorkerSandbox,
  type WorkerSandbox,
  type WorkerSandboxOptions,
} from "./worker_host.ts";
import { processLauncher } from "./process_host.ts";
import { createTestKernel, type TestKernel } from "../testing.ts";

const PROBE = new URL("./testdata/probe_plugin.ts", import.meta.url).href;

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

/** The probe plugin in a Worker, behind a real HTTP server on loopback. */
async function node(
  more: Partial<WorkerSandboxOptions> = {},
): Promise<
  { sandbox: WorkerSandbox; t: TestKernel; ws: string; close(): Promise<void> }
> {
  const sandbox = await openWorkerSandbox(PROBE, {
    permissions: NONE,
    ...more,
  });
  const t = await createTestKernel([sandbox.plugin]);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req, info) => t.app.fetch(req, info),
  );
  return {
    sandbox,
    t,
    ws: `ws://127.0.0.1:${server.addr.port}/ws/probe`,
    async close() {
      await t.close();
      await server.shutdown();
    },
  };
}

/** A WebSocket client whose frames and close can be awaited in order. */
function connect(url: string) {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const frames: (string | ArrayBuffer)[] = [];
  const waiting: ((f: string | ArrayBuffer) => void)[] = [];
  ws.onmessage = (e) => {
    const w = waiting.shift();
    if (w) w(e.data);
    else frames.push(e.data);
  };
  const closed = new Promise<CloseEvent>((resolve) => {
    ws.onclose = resolve;
  });
  const opened = new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = (e) => reject(new Error((e as ErrorEvent).message));
  });
  return {
    ws,
    opened,
    closed,
    next: () =>
      frames.length > 0
        ? Promise.resolve(frames.shift()!)
        : new Promise<string | ArrayBuffer>((r) => waiting.push(r)),
  };
}

Deno.test("relayed websocket: a sandboxed plugin's own handler runs unchanged: its refusal, text and binary echo, its close code and reason, and the client's close reaching it", async () => {
  const n = await node();
  try {
    const refused = await n.t.request("/ws/probe", {
      headers: { upgrade: "websocket" },
    });
    assert.equal(refused.status, 401);
    assert.equal(await refused.text(), "who are you?");

    const c = connect(`${n.ws}?token=letmein`);
    await c.opened;
    assert.equal(await c.next(), "hello");
    c.ws.send("hi");
    assert.equal(await c.next(), "echo:hi");
    c.ws.send(new Uint8Array([1, 2, 3]));
    assert.deepEqual([...new Uint8Array(await c.next() as ArrayBuffer)], [
      3,
      2,
      1,
    ]);
    c.ws.send("bye");
    const bye = await c.closed;
    assert.equal(bye.code, 4000);
    assert.equal(bye.reason, "bye");

    // The client closes: the plugin's close listener sees its code.
    const seen = new Promise((resolve) => {
      const off = n.t.router.subscribe("probe.socket.closed", (p) => {
        if ((p as { code: number }).code === 4000) return; // the first socket
        off();
        resolve(p);
      });
    });
    const d = connect(`${n.ws}?token=letmein`);
    assert.equal(await d.next(), "hello");
    d.ws.close(1000);
    await d.closed;
    assert.deepEqual(await seen, { code: 1000 });
  } finally {
    await n.close();
  }
});

Deno.test("relayed websocket: a crash of the sandbox closes its sockets 1011; the restarted sandbox accepts new ones", async () => {
  const n = await node({ restart: { baseDelayMs: 20 } });
  try {
    const c = connect(`${n.ws}?token=letmein`);
    assert.equal(await c.next(), "hello");
    const other = connect(`${n.ws}?token=letmein`);
    assert.equal(await other.next(), "hello");
    c.ws.send("crash");
    const [a, b] = await Promise.all([c.closed, other.closed]);
    assert.equal(a.code, 1011);
    assert.match(a.reason, /plugin sandbox ended: crashed: boom from a socket/);
    assert.equal(b.code, 1011);
    for (let i = 0; i < 300 && n.sandbox.state !== "running"; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(n.sandbox.starts, 2);
    const again = connect(`${n.ws}?token=letmein`);
    assert.equal(await again.next(), "hello");
    again.ws.send("back");
    assert.equal(await again.next(), "echo:back");
    again.ws.close();
    await again.closed;
  } finally {
    await n.close();
  }
});

Deno.test("relayed websocket: backpressure: a client sending faster than the plugin takes is closed 1013, a frame over the cap 1009, a plugin sending more than the client takes 1013", async () => {
  const n = await node({ socketBufferBytes: 256 * 1024 });
  // The node logs each close for backpressure (a client still sending may
  // see an abnormal closure instead of the code: Deno's does).
  const overflowed = (code: number, reason: RegExp) => {
    const r = n.t.logs.findLast((r) => r.msg === "relayed websocket closed");
    assert.equal(r?.code, code);
    assert.match(String(r?.reason), reason);
  };
  try {
    // The plugin blocks its event loop for a second; the client keeps sending.
    const fast = connect(`${n.ws}?token=letmein`);
    assert.equal(await fast.next(), "hello");
    fast.ws.send("block");
    const chunk = new Uint8Array(32 * 1024);
    for (let i = 0; i < 16; i++) fast.ws.send(chunk);
    await fast.closed;
    overflowed(1013, /^the plugin is behind by more than 262144 bytes$/);

    const big = connect(`${n.ws}?token=letmein`);
    assert.equal(await big.next(), "hello");
    big.ws.send(new Uint8Array(256 * 1024 + 1));
    await big.closed;
    overflowed(1009, /^frame over 262144 bytes$/);

    // 64 frames of 64 KiB in one turn: more than the node's socket may hold.
    const flood = connect(`${n.ws}?token=letmein`);
    assert.equal(await flood.next(), "hello");
    flood.ws.send("spam:64");
    const out = await flood.closed;
    // This client reads everything, so it sees the code.
    assert.equal(out.code, 1013);
    assert.match(out.reason, /client is behind by more than 262144 bytes/);
    overflowed(1013, /^the client is behind/);
  } finally {
    await n.close();
  }
});

Deno.test("relayed websocket: the same socket works from a process sandbox, across its stdio frames", async () => {
  const n = await node({ launcher: processLauncher({ flags: [] }) });
  try {
    const c = connect(`${n.ws}?token=letmein`);
    assert.equal(await c.next(), "hello");
    c.ws.send("over a pipe");
    assert.equal(await c.next(), "echo:over a pipe");
    c.ws.send(new Uint8Array([9, 8]));
    assert.deepEqual([...new Uint8Array(await c.next() as ArrayBuffer)], [
      8,
      9,
    ]);
    c.ws.send("bye");
    assert.equal((await c.closed).code, 4000);
  } finally {
    await n.close();
  }
});
