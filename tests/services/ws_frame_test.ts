import assert from "node:assert/strict";
import { openWebSocket } from "../../sdk/ws_client.ts";

// A payload of 126..65535 bytes has a two-byte length; when those two bytes
// said 127 the client read 8 more as a 64-bit length and closed with 1009.
// Mesh links dial with this client: a 127-byte service request (ids 100-999
// on a short action name) closed the link under the calls in flight.
Deno.test("sdk WebSocket client: messages of 125 to 128 bytes (127 in the two-byte length) arrive whole", async () => {
  await using server = Deno.serve({ port: 0, onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onopen = () => {
      for (const n of [125, 126, 127, 128]) socket.send("x".repeat(n));
    };
    return response;
  });
  const ws = openWebSocket(`ws://127.0.0.1:${server.addr.port}/`);
  const got: number[] = [];
  const done = Promise.withResolvers<void>();
  ws.onmessage = (e) => {
    got.push((e.data as string).length);
    if (got.length === 4) done.resolve();
  };
  ws.onclose = (e) => done.reject(new Error(`closed ${e.code} ${e.reason}`));
  await done.promise;
  ws.onclose = null;
  assert.deepEqual(got, [125, 126, 127, 128]);
  const closed = new Promise((r) => (ws.onclose = r));
  ws.close(1000);
  await closed;
});
