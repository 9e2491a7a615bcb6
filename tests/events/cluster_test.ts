/**
 * The event bus across real processes sharing one KV: concurrent publishers
 * on three nodes end in one total order, replay from an offset is exact, a
 * filtered SSE reader sees exactly its events, bad filters get 400, and a
 * named subscriber SIGKILLed mid-stream resumes from its cursor without gaps.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { eventually, KV_TARGETS, startCluster } from "../cluster/_cluster.ts";
import type { PlexusProcess } from "../integration/_process.ts";
import type { StoredEvent } from "../../plugins/events/store.ts";
import { storedEvents } from "./_util.ts";

/** Every stored event of the `custom` stream, in offset order. */
const storedCustom = (kv: Deno.Kv, after = "") =>
  storedEvents(kv, "custom", after);

/** Publishes `perNode` custom events on every node at once, `parallel` in flight per node. */
async function publishAll(
  nodes: PlexusProcess[],
  perNode: number,
  parallel = 8,
): Promise<Map<string, string>> {
  const offsets = new Map<string, string>();
  const token = await nodes[0].token("analyst");
  await Promise.all(nodes.map(async (n, k) => {
    let next = 0;
    await Promise.all(Array.from({ length: parallel }, async () => {
      while (next < perNode) {
        const i = next++;
        const res = await fetch(`${n.url}/api/v1/events`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            authorization: `Bearer ${token}`,
          },
          body: JSON.stringify({
            type: i % 2 ? "custom.odd" : "custom.even",
            data: { from: k, i },
          }),
        });
        const body = await res.json();
        assert.equal(res.status, 202, JSON.stringify(body));
        offsets.set(`${k}:${i}`, body.offset);
      }
    }));
  }));
  return offsets;
}

/** Reads SSE events from `res` until `n` arrived. */
async function readSse(res: Response, n: number): Promise<StoredEvent[]> {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  const out: StoredEvent[] = [];
  let buf = "";
  try {
    while (out.length < n) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let k;
      while ((k = buf.indexOf("\n\n")) >= 0) {
        const data = /^data: (.*)$/m.exec(buf.slice(0, k));
        buf = buf.slice(k + 2);
        if (data) out.push(JSON.parse(data[1]));
      }
    }
  } finally {
    await reader.cancel();
  }
  return out;
}

for (const target of KV_TARGETS) {
  Deno.test(`events (${target.name}): 3 nodes publishing concurrently end in one total order; replay and filters are exact`, async () => {
    await using c = await startCluster(target, {
      nodes: 3,
      args: ["--plugin", "builtin:events"],
      config: { rateLimit: { enabled: false } },
    });
    if (!c) return;
    const perNode = 300;
    const offsets = await publishAll(c.nodes, perNode);
    const stored = await storedCustom(c.kv);
    // Every publish is stored once, at the offset its node answered with.
    assert.equal(stored.length, 3 * perNode);
    const byOffset = new Map(stored.map((e) => [e.offset, e]));
    assert.equal(byOffset.size, stored.length);
    for (const [key, offset] of offsets) {
      const e = byOffset.get(offset);
      assert.ok(e, `${key} at ${offset} stored`);
      const [k, i] = key.split(":").map(Number);
      assert.deepEqual(e.data, { from: k, i });
    }
    // One total order: offsets strictly rise, and each node's own events
    // keep the order it emitted them in (its seq).
    for (let j = 1; j < stored.length; j++) {
      assert.ok(stored[j - 1].offset < stored[j].offset);
    }
    for (const node of ["n1", "n2", "n3"]) {
      const seqs = stored.filter((e) => e.node === node).map((e) => e.seq);
      assert.equal(seqs.length, perNode);
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), node);
    }
    // Concurrent nodes really interleave in the one order.
    const switches = stored.filter((e, j) =>
      j > 0 && e.node !== stored[j - 1].node
    ).length;
    assert.ok(switches > 3, `only ${switches} switches between nodes`);
    // Replay from an offset returns exactly the events after it.
    for (const at of [0, 137, 450, 899]) {
      const after = await storedCustom(c.kv, stored[at].offset);
      assert.deepEqual(
        after.map((e) => e.offset),
        stored.slice(at + 1).map((e) => e.offset),
      );
    }
    // A filtered SSE reader on n2 sees exactly n1's odd events, from the start.
    const expected = stored.filter((e) =>
      e.node === "n1" && e.type === "custom.odd"
    );
    const filter = encodeURIComponent('node == "n1" and type == "custom.odd"');
    const res = await c.nodes[1].api(
      `/api/v1/events?from=start&filter=${filter}`,
      {},
      "viewer",
    );
    assert.equal(res.status, 200);
    const seen = await readSse(res, expected.length + 0);
    assert.deepEqual(seen.map((e) => e.offset), expected.map((e) => e.offset));
    // And nothing more: the next matching event is the one published now.
    const res2 = await c.nodes[2].api(
      `/api/v1/events?from=${expected.at(-1)!.offset}&filter=${filter}`,
      {},
      "viewer",
    );
    const next = readSse(res2, 1);
    const marker = await c.nodes[0].api("/api/v1/events", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ type: "custom.odd", data: { marker: true } }),
    }, "analyst");
    const { offset } = await marker.json();
    assert.deepEqual((await next).map((e) => e.offset), [offset]);
  });
}

Deno.test("events (shared KV file): WS /api/v1/events streams filtered events; bad filters get 400 over real HTTP", async () => {
  await using c = await startCluster(KV_TARGETS[0], {
    nodes: 1,
    args: ["--plugin", "builtin:events"],
  });
  if (!c) return;
  const [n] = c.nodes;
  const token = await n.token("viewer");
  for (
    const [filter, re] of [
      [
        'type regex "x"',
        /expected an operator .* at position 5, found 'regex'/,
      ],
      ["(".repeat(50) + "a == 1" + ")".repeat(50), /nests deeper than 16/],
      ["a".repeat(1_000_000), /1000000 characters; the limit is 4096/],
    ] as const
  ) {
    // A 1 MB expression does not fit a URL: it goes to the check route.
    const res = filter.length > 10_000
      ? await n.api("/api/v1/events/filters", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ filter }),
      }, "viewer")
      : await n.api(
        `/api/v1/events?filter=${encodeURIComponent(filter)}`,
        {},
        "viewer",
      );
    const body = await res.json();
    assert.equal(res.status, 400, JSON.stringify(body).slice(0, 200));
    assert.match(body.error.message, re);
  }
  const ws = new WebSocket(
    `${n.url.replace("http", "ws")}/api/v1/events?from=start&filter=${
      encodeURIComponent('type == "custom.ws"')
    }`,
    { headers: { authorization: `Bearer ${token}` } },
  );
  const got: StoredEvent[] = [];
  const three = new Promise<void>((resolve, reject) => {
    ws.onmessage = (m) => {
      got.push(JSON.parse(m.data));
      if (got.length === 3) resolve();
    };
    ws.onerror = (e) =>
      reject(new Error(`websocket failed: ${(e as ErrorEvent).message}`));
  });
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onclose = (e) =>
      reject(new Error(`websocket closed before open: ${e.code} ${e.reason}`));
  });
  for (let i = 0; i < 3; i++) {
    const res = await n.api("/api/v1/events", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        type: i === 1 ? "custom.other" : "custom.ws",
        data: { i },
      }),
    }, "analyst");
    assert.equal(res.status, 202);
  }
  await n.api("/api/v1/events", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ type: "custom.ws", data: { i: 3 } }),
  }, "analyst");
  await three;
  ws.close();
  assert.deepEqual(got.map((e) => (e.data as { i: number }).i), [0, 2, 3]);
  // Without a token the upgrade is refused.
  const anon = new WebSocket(`${n.url.replace("http", "ws")}/api/v1/events`);
  const refused = await new Promise<string>((resolve) => {
    anon.onopen = () => resolve("opened");
    anon.onerror = (e) => resolve((e as ErrorEvent).message);
  });
  assert.match(refused, /401/);
});

Deno.test("events (shared KV file): a named subscriber SIGKILLed mid-stream resumes from its cursor without gaps", async () => {
  await using c = await startCluster(KV_TARGETS[0], {
    nodes: 2,
    args: ["--plugin", "builtin:events"],
    config: { rateLimit: { enabled: false } },
  });
  if (!c) return;
  const out = join(c.dir, "handled.txt");
  const spawn = () =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--unstable-kv",
        `--allow-read`,
        `--allow-write=${c.dir}`,
        new URL("./_subscriber.ts", import.meta.url).pathname,
        c.spec,
        out,
        "kill-test",
      ],
      stdout: "null",
      stderr: "inherit",
    }).spawn();
  const lines = async () => {
    try {
      return (await Deno.readTextFile(out)).split("\n").filter(Boolean);
    } catch {
      return [];
    }
  };
  // Publishing goes on while the subscriber is killed and restarted.
  const publishing = publishAll(c.nodes, 600, 4);
  let child = spawn();
  await eventually(lines, (l) => l.length >= 300, "300 events handled");
  child.kill("SIGKILL");
  await child.status;
  const before = (await lines()).length;
  child = spawn();
  const offsets = await publishing;
  const all = [...offsets.values()].sort();
  try {
    await eventually(
      async () => new Set(await lines()).size,
      (n) => n >= all.length,
      `all ${all.length} events handled`,
    );
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
  const handled = await lines();
  const unique = new Set(handled);
  // No gaps: every published event was handled, nothing else was.
  assert.deepEqual([...unique].sort(), all);
  // Handled in offset order within each run; duplicates only around the kill.
  const duplicates = handled.length - unique.size;
  console.log(
    `handled ${handled.length} lines for ${unique.size} events: ${duplicates} duplicates after the SIGKILL at line ${before}`,
  );
  // At most what was handled since the last saved cursor (ackEvery = 25).
  assert.ok(duplicates <= 25, `${duplicates} duplicates`);
  for (const run of [handled.slice(0, before), handled.slice(before)]) {
    assert.deepEqual(run, [...run].sort(), "each run handles in offset order");
  }
});

Deno.test("events (shared KV file): an SSE client that stops reading is dropped with the reason once over its buffer; the bus goes on", async () => {
  await using c = await startCluster(KV_TARGETS[0], {
    nodes: 1,
    args: ["--plugin", "builtin:events"],
    config: {
      rateLimit: { enabled: false },
      pluginConfig: {
        events: { maxClientBufferBytes: 65_536, slowClientMs: 300 },
      },
    },
  });
  if (!c) return;
  const [n] = c.nodes;
  const token = await n.token("viewer");
  const { hostname, port } = new URL(n.url);
  // A client that asks for the stream and then reads nothing.
  const conn = await Deno.connect({ hostname, port: Number(port) });
  await conn.write(new TextEncoder().encode(
    `GET /api/v1/events?from=start&filter=${
      encodeURIComponent('type == "custom.flood"')
    } HTTP/1.1\r\nHost: ${hostname}\r\nAuthorization: Bearer ${token}\r\n\r\n`,
  ));
  const dropped = async () =>
    Number(
      /plexus_events_clients_dropped_total (\d+)/.exec(
        await (await fetch(`${n.url}/metrics`)).text(),
      )?.[1] ?? 0,
    );
  // Big events until the socket buffers are full and the node gives up.
  const offsets: string[] = [];
  const analyst = await n.token("analyst");
  for (let i = 0; i < 3000 && (i % 50 !== 0 || await dropped() === 0); i++) {
    const res = await fetch(`${n.url}/api/v1/events`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: `Bearer ${analyst}`,
      },
      body: JSON.stringify({
        type: "custom.flood",
        data: { i, pad: "x".repeat(12_000) },
      }),
    });
    assert.equal(res.status, 202);
    offsets.push((await res.json()).offset);
  }
  await eventually(dropped, (d) => d === 1, "the slow client dropped");
  // The bus went on: every event is stored.
  const stored = await storedCustom(c.kv);
  assert.deepEqual(stored.map((e) => e.offset), offsets);
  // Reading now: what was buffered, then the reason.
  const decoder = new TextDecoder();
  const buf = new Uint8Array(1 << 16);
  let text = "";
  while (!text.includes("event: dropped")) {
    const got = await conn.read(buf);
    if (got === null) break;
    text += decoder.decode(buf.subarray(0, got));
  }
  conn.close();
  const reason = /event: dropped\ndata: (.*)\n/.exec(text);
  assert.ok(reason, "the stream ends with a dropped event");
  const body = JSON.parse(reason[1]);
  assert.match(
    body.reason,
    /slow consumer: over 65536 unsent bytes for 300 ms/,
  );
  const delivered = [...text.matchAll(/^id: (.*)$/gm)].map((m) => m[1]);
  assert.ok(delivered.length < offsets.length, `${delivered.length} delivered`);
  assert.deepEqual(delivered, offsets.slice(0, delivered.length));
  // The last event written before the reason: resume after it.
  assert.equal(body.offset, delivered.at(-1));
});

Deno.test("events (shared KV file): a WebSocket client that stops reading is closed with 4008 and the reason", async () => {
  await using c = await startCluster(KV_TARGETS[0], {
    nodes: 1,
    args: ["--plugin", "builtin:events"],
    config: {
      rateLimit: { enabled: false },
      pluginConfig: {
        events: { maxClientBufferBytes: 65_536, slowClientMs: 300 },
      },
    },
  });
  if (!c) return;
  const [n] = c.nodes;
  const token = await n.token("viewer");
  const { hostname, port } = new URL(n.url);
  // The opening handshake by hand, then nothing is read.
  const conn = await Deno.connect({ hostname, port: Number(port) });
  const key = crypto.getRandomValues(new Uint8Array(16)).toBase64();
  await conn.write(new TextEncoder().encode(
    `GET /api/v1/events?from=start&filter=${
      encodeURIComponent('type == "custom.flood"')
    } HTTP/1.1\r\nHost: ${hostname}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
      `Authorization: Bearer ${token}\r\n\r\n`,
  ));
  const dropped = async () =>
    Number(
      /plexus_events_clients_dropped_total (\d+)/.exec(
        await (await fetch(`${n.url}/metrics`)).text(),
      )?.[1] ?? 0,
    );
  const analyst = await n.token("analyst");
  for (let i = 0; i < 3000 && (i % 50 !== 0 || await dropped() === 0); i++) {
    const res = await fetch(`${n.url}/api/v1/events`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: `Bearer ${analyst}`,
      },
      body: JSON.stringify({
        type: "custom.flood",
        data: { i, pad: "x".repeat(12_000) },
      }),
    });
    assert.equal(res.status, 202);
    await res.body?.cancel();
  }
  await eventually(dropped, (d) => d === 1, "the slow client dropped");
  // Reading now: the 101, the buffered messages, then a close frame (opcode
  // 8) carrying 4008 and the reason.
  const bytes: number[] = [];
  const buf = new Uint8Array(1 << 16);
  const reason = "slow consumer: over 65536 unsent bytes for 300 ms";
  let text = "";
  while (!text.includes(reason)) {
    const got = await conn.read(buf);
    if (got === null) break;
    bytes.push(...buf.subarray(0, got));
    text += String.fromCharCode(...buf.subarray(0, got));
  }
  conn.close();
  assert.ok(text.startsWith("HTTP/1.1 101"), text.slice(0, 40));
  const at = text.indexOf(reason);
  assert.ok(at > 0, "the close reason arrives");
  // 0x88 (FIN + close), length, then the code 4008 = 0x0FA8.
  assert.deepEqual(bytes.slice(at - 4, at), [
    0x88,
    2 + reason.length,
    0x0f,
    0xa8,
  ]);
});
