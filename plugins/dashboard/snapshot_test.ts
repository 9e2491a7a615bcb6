import assert from "node:assert/strict";
import { createSnapshots, type Snapshot } from "./snapshot.ts";

/**
 * Two stand-in nodes on loopback, each with its own KV (so neither's
 * registry holds the other's record): the snapshot takes each member's
 * version and load from its `GET /api/v1/cluster/self`.
 */
Deno.test("dashboard snapshot: a member whose record is not in this node's KV reports its own load through /api/v1/cluster/self; running sagas list every step, running debates their latest round's turns", async () => {
  const servers: Deno.HttpServer[] = [];
  const urls: string[] = [];
  const serve = (id: string, rss: number) => {
    const server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen() {} },
      (req) => {
        const path = new URL(req.url).pathname;
        const json = (v: unknown) => Response.json(v);
        switch (path) {
          case "/api/v1/cluster":
            return json({
              nodeId: id,
              leader: "a",
              epoch: 1,
              consensus: "none",
              members: ["a", "b"].map((m, i) => ({
                id: m,
                address: urls[i],
                status: "up",
                lastSeen: new Date().toISOString(),
              })),
            });
          case "/api/v1/plugins":
          case "/api/v1/tasks/dead":
            return json([]);
          case "/api/v1/agents":
            return new Response(null, { status: 404 });
          case "/metrics":
            return new Response("plexus_process_resident_memory_bytes 1\n");
          case "/health":
            return json({ status: "ok", version: "9.9.9", services: {} });
          case "/api/v1/sagas": {
            const status = new URL(req.url).searchParams.get("status");
            return json({
              sagas: status === "running"
                ? [{
                  id: "order-1",
                  def: {
                    name: "order",
                    groups: [[{ id: "reserve" }], [{ id: "charge" }, {
                      id: "mail",
                    }]],
                  },
                  status: "running",
                  group: 1,
                  steps: {
                    reserve: { status: "done", attempts: [{}] },
                    charge: { status: "retrying", attempts: [{}, {}] },
                  },
                  createdAt: 1,
                  updatedAt: 2,
                }]
                : [],
            });
          }
          case "/api/v1/debates":
            return json({
              debates: [{
                id: "d-1",
                topic: "Tabs or spaces?",
                status: "running",
                roundsRun: 1,
                rounds: 3,
                participants: ["x", "y"],
              }],
            });
          case "/api/v1/debates/d-1":
            return json({
              turns: [
                {
                  round: 1,
                  participant: 0,
                  ref: "x",
                  status: "answered",
                  position: "tabs",
                  confidence: 0.5,
                  latencyMs: 3,
                },
                {
                  round: 2,
                  participant: 0,
                  ref: "x",
                  status: "answered",
                  position: "spaces",
                  confidence: 0.9,
                  latencyMs: 4,
                  argument: "long",
                },
                {
                  round: 2,
                  participant: 1,
                  ref: "y",
                  status: "silent",
                  reason: "timeout",
                  latencyMs: 100,
                },
              ],
            });
          case "/api/v1/cluster/self":
            return json({
              id,
              address: urls[id === "a" ? 0 : 1],
              version: "9.9.9",
              load: { inflight: id === "a" ? 0 : 7, rss },
              startedAt: 1,
            });
        }
        return new Response(null, { status: 404 });
      },
    );
    servers.push(server);
    urls.push(`http://127.0.0.1:${server.addr.port}`);
  };
  serve("a", 1 << 20);
  serve("b", 3 << 20);
  const sent: string[] = [];
  const got = Promise.withResolvers<Snapshot>();
  const socket = Object.assign(new EventTarget(), {
    readyState: WebSocket.OPEN,
    send(text: string) {
      sent.push(text);
      got.resolve(JSON.parse(text).payload);
    },
    close() {},
  }) as unknown as WebSocket;
  const snapshots = createSnapshots(
    {
      nodeFetch: (url: string | URL | Request, init?: RequestInit) =>
        fetch(url, init),
      node: { id: "a", address: urls[0] },
      log: { debug() {} },
    } as unknown as Parameters<typeof createSnapshots>[0],
    {
      intervalMs: 60_000,
    },
  );
  try {
    snapshots.add(socket);
    socket.dispatchEvent(new Event("open"));
    const s = await got.promise;
    assert.deepEqual(s.nodes, {
      a: {
        version: "9.9.9",
        load: { inflight: 0, rss: 1 << 20 },
        startedAt: 1,
      },
      b: {
        version: "9.9.9",
        load: { inflight: 7, rss: 3 << 20 },
        startedAt: 1,
      },
    });
  } finally {
    snapshots.close();
    await Promise.all(servers.map((s) => s.shutdown()));
  }
});
