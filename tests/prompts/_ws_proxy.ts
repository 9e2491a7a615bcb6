/**
 * A WebSocket proxy for tests, sitting between agents and a node's gateway
 * (`WS /ws/agent`): it relays every frame both ways and, when armed, alters
 * one record in flight (the first agent → node frame after the node's next
 * frame to that agent, i.e. the agent's answer to a request). It records how
 * the node closed each proxied connection.
 *
 * @module
 */

/** A running proxy. */
export interface WsProxy {
  /** Base URL to give agents instead of the node's. */
  url: string;
  /** Tampers the agent's next frame sent after the node's next frame to it. */
  arm(mutate: (frame: Uint8Array) => void): void;
  /** Resolves once an armed mutation was applied, with the frame's size. */
  tampered(): Promise<number>;
  /** Close codes and reasons the node sent, per proxied connection, in order. */
  closes: { code: number; reason: string }[];
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts a proxy on port 0 in front of `nodeUrl` (an `http://` base URL). */
export function startWsProxy(nodeUrl: string): WsProxy {
  const upstreamUrl = `${nodeUrl.replace(/^http/, "ws")}/ws/agent`;
  let armed: ((frame: Uint8Array) => void) | undefined;
  let waitingForNode = false;
  let done = Promise.withResolvers<number>();
  const closes: { code: number; reason: string }[] = [];
  const sockets = new Set<WebSocket>();

  const server = Deno.serve({ port: 0, onListen() {} }, (req) => {
    const { socket: client, response } = Deno.upgradeWebSocket(req);
    client.binaryType = "arraybuffer";
    const upstream = new WebSocket(upstreamUrl);
    upstream.binaryType = "arraybuffer";
    sockets.add(client).add(upstream);
    const early: (string | ArrayBuffer)[] = [];
    upstream.onopen = () => {
      for (const m of early.splice(0)) upstream.send(m);
    };
    client.onmessage = (e) => {
      let data = e.data as string | ArrayBuffer;
      if (armed && !waitingForNode && data instanceof ArrayBuffer) {
        const frame = new Uint8Array(data.slice(0));
        armed(frame);
        armed = undefined;
        data = frame.buffer;
        done.resolve(frame.length);
      }
      if (upstream.readyState === WebSocket.OPEN) upstream.send(data);
      else early.push(data);
    };
    upstream.onmessage = (e) => {
      if (armed) waitingForNode = false;
      if (client.readyState === WebSocket.OPEN) client.send(e.data);
    };
    upstream.onclose = (e) => {
      closes.push({ code: e.code, reason: e.reason });
      sockets.delete(upstream);
      // 1005/1006 cannot be sent: pass them on as a plain close.
      const code = e.code >= 3000 ? e.code : 1000;
      if (client.readyState <= WebSocket.OPEN) client.close(code, e.reason);
    };
    client.onclose = () => {
      sockets.delete(client);
      if (upstream.readyState <= WebSocket.OPEN) upstream.close();
    };
    return response;
  });

  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    arm(mutate) {
      done = Promise.withResolvers<number>();
      armed = mutate;
      waitingForNode = true;
    },
    tampered: () => done.promise,
    closes,
    async [Symbol.asyncDispose]() {
      for (const s of sockets) s.close();
      await server.shutdown();
    },
  };
}
