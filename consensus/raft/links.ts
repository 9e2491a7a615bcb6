/**
 * Authenticated WebSocket links that carry Raft messages between nodes.
 *
 * Each node dials every peer base URL it is given (at `path`, by default
 * `/plugins/raft/link` on the peer's own HTTP port) and accepts links the
 * same way, redialing a lost link every `reconnectMs`. A link opens with
 * `hello {node, addr, nonce}` both ways, then `auth {mac}`: HMAC-SHA256
 * under the cluster `secret` of the other side's nonce and the sender's id.
 * A wrong MAC closes the link with 4003; nothing else is accepted before it.
 * That handshake is also how node ids are learned: a peer URL maps to the
 * id its node proves.
 *
 * After the handshake each text frame is a JSON array of Raft messages, all
 * `from` the linked peer (others are dropped). Delivery is best effort, as
 * Raft expects; nothing is stored. A frame `{t: "c", d}` carries one
 * control value (membership requests between plugins) the same way.
 *
 * Peers can be added at runtime with {@linkcode RaftLinks.dial} (a node
 * joining a running cluster).
 *
 * @module
 */
import { openWebSocket, type WebSocketLike } from "../../sdk/ws_client.ts";
import { createHmac, timingSafeEqual } from "node:crypto";
import type { Message } from "./types.ts";

/** What a link carries: any JSON message naming its two ends (Raft's by default; PBFT reuses the links). */
export interface LinkMessage {
  from: string;
  to: string;
}

/** Options of {@linkcode startLinks}. */
export interface RaftLinksOptions<M extends LinkMessage = Message> {
  /** This node's id. */
  id: string;
  /** This node's base URL, told to peers (for members()); a function when known only later. */
  address: string | (() => string);
  /** The cluster secret every link must prove (at least 16 characters). */
  secret: string;
  /** Peer base URLs to dial, e.g. `http://127.0.0.1:8087`. */
  peers: string[];
  /** Path of the link endpoint on every node. @default {"/plugins/raft/link"} */
  path?: string;
  /** Called with each authenticated batch. */
  onMessages: (from: string, messages: M[]) => void;
  /** Called with each authenticated control value (see {@linkcode RaftLinks.control}). */
  onControl?: (from: string, data: unknown) => void;
  /** Called when a peer's id (and address) is first learned or its link comes up. */
  onPeer?: (id: string, address: string) => void;
  /** @default {300} */
  reconnectMs?: number;
  /** @default {3000} */
  handshakeTimeoutMs?: number;
}

/** A peer as the links know it. */
export interface LinkPeer {
  id: string;
  address: string;
  connected: boolean;
}

/** Running links. */
export interface RaftLinks<M extends LinkMessage = Message> {
  /** Sends a batch to `to` over any authenticated link; false if none is up. */
  send(to: string, messages: M[]): boolean;
  /** Sends one control value to `to` over any authenticated link; false if none is up. */
  control(to: string, data: unknown): boolean;
  /** Starts dialing another peer base URL (again: a no-op). */
  dial(base: string): void;
  /** Stops redialing a base URL (a failed join); a link already up stays. */
  forget(base: string): void;
  /** Accepts a link (a WebSocket upgrade request) on the node's HTTP server. */
  handleUpgrade(req: Request): Response;
  /** Peers whose id is known. */
  peers(): LinkPeer[];
  close(): void;
}

type Frame<M> =
  | { t: "hello"; node: string; addr: string; nonce: string }
  | { t: "auth"; mac: string }
  | { t: "m"; m: M[] }
  | { t: "c"; d: unknown };

interface Link {
  ws: WebSocketLike;
  peer?: string;
  /** The address the peer claimed in its hello. */
  addr?: string;
  ready: boolean;
}

const encoder = new TextEncoder();

/**
 * A peer base URL → its link URL (`ws:`/`wss:`).
 *
 * @example Usage
 * ```ts
 * import { raftLinkUrl } from "./links.ts";
 * raftLinkUrl("https://10.0.0.2:8086"); // "wss://10.0.0.2:8086/plugins/raft/link"
 * ```
 */
export function raftLinkUrl(base: string, path = "/plugins/raft/link"): string {
  const u = new URL(base);
  u.protocol = u.protocol === "https:" || u.protocol === "wss:"
    ? "wss:"
    : "ws:";
  u.pathname = path;
  return u.href;
}

/**
 * Starts dialing `peers`; mount {@linkcode RaftLinks.handleUpgrade} at
 * `path` on the node's HTTP server to accept links.
 *
 * @example Two nodes on loopback
 * ```ts
 * import { startLinks } from "./links.ts";
 * const got = Promise.withResolvers<string>();
 * const secret = "0123456789abcdef";
 * let b!: ReturnType<typeof startLinks>;
 * const server = Deno.serve({ port: 0, onListen: () => {} }, (req) => b.handleUpgrade(req));
 * const url = `http://127.0.0.1:${server.addr.port}`;
 * b = startLinks({ id: "b", address: url, secret, peers: [], onMessages: (from) => got.resolve(from) });
 * const a = startLinks({ id: "a", address: "http://a", secret, peers: [url], onMessages: () => {} });
 * while (!a.send("b", [{ type: "heartbeat", from: "a", to: "b", term: 1 }])) {
 *   await new Promise((r) => setTimeout(r, 20));
 * }
 * await got.promise; // "a"
 * a.close();
 * b.close();
 * await server.shutdown();
 * ```
 */
export function startLinks<M extends LinkMessage = Message>(
  options: RaftLinksOptions<M>,
): RaftLinks<M> {
  const o = {
    path: "/plugins/raft/link",
    reconnectMs: 300,
    handshakeTimeoutMs: 3000,
    ...options,
  };
  if (o.secret.length < 16) {
    throw new RangeError(
      `raft links need a cluster secret of at least 16 characters, got ${o.secret.length}`,
    );
  }
  const links = new Map<string, Set<Link>>(); // ready links by peer id
  const addresses = new Map<string, string>();
  const all = new Set<Link>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  let closed = false;
  const mac = (nonce: string, node: string) =>
    createHmac("sha256", o.secret).update(`plexus-raft|${nonce}|${node}`)
      .digest("base64url");
  const sendFrame = (l: Link, f: Frame<M>) => {
    if (l.ws.readyState === WebSocket.OPEN) l.ws.send(JSON.stringify(f));
  };

  const attach = (ws: WebSocketLike, onGone?: () => void) => {
    const link: Link = { ws, ready: false };
    all.add(link);
    const nonce = crypto.randomUUID();
    const fail = (code: number, reason: string) => {
      try {
        ws.close(code, reason);
      } catch { /* closing */ }
    };
    const handshake = setTimeout(() => {
      if (!link.ready) fail(4408, "raft link handshake timed out");
    }, o.handshakeTimeoutMs);
    const hello = () =>
      sendFrame(link, {
        t: "hello",
        node: o.id,
        addr: typeof o.address === "string" ? o.address : o.address(),
        nonce,
      });
    if (ws.readyState === WebSocket.OPEN) hello();
    else ws.onopen = hello;
    ws.onerror = () => {};
    ws.onclose = () => {
      clearTimeout(handshake);
      all.delete(link);
      if (link.peer) links.get(link.peer)?.delete(link);
      onGone?.();
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (typeof ev.data !== "string") return fail(1003, "text frames only");
      let f: Frame<M>;
      try {
        f = JSON.parse(ev.data);
      } catch {
        return fail(1007, "frame is not JSON");
      }
      if (link.ready) {
        if (f.t === "c") return o.onControl?.(link.peer!, f.d);
        if (f.t !== "m" || !Array.isArray(f.m)) {
          return fail(1002, "expected a message batch");
        }
        const peer = link.peer!;
        const ms = f.m.filter((m) => m && m.from === peer && m.to === o.id);
        if (ms.length) o.onMessages(peer, ms);
        return;
      }
      if (f.t === "hello") {
        if (link.peer !== undefined || typeof f.node !== "string" || !f.node) {
          return fail(1002, "unexpected hello");
        }
        if (f.node === o.id) return fail(4009, "link to self");
        link.peer = f.node;
        if (typeof f.addr === "string") link.addr = f.addr;
        sendFrame(link, { t: "auth", mac: mac(String(f.nonce), o.id) });
        return;
      }
      if (f.t === "auth" && link.peer !== undefined) {
        const want = encoder.encode(mac(nonce, link.peer));
        const got = encoder.encode(String(f.mac));
        if (want.length !== got.length || !timingSafeEqual(want, got)) {
          return fail(4003, "raft link authentication failed");
        }
        clearTimeout(handshake);
        link.ready = true;
        // Only a proven peer's address counts.
        if (link.addr) addresses.set(link.peer, link.addr);
        let set = links.get(link.peer);
        if (!set) links.set(link.peer, set = new Set());
        set.add(link);
        o.onPeer?.(link.peer, addresses.get(link.peer) ?? "");
        return;
      }
      fail(1002, "not authenticated");
    };
  };

  const dial = (base: string) => {
    if (closed) return;
    let ws: WebSocketLike;
    try {
      // Not `new WebSocket`: Deno's client writes a frame over 1 KiB in
      // several writes with Nagle on, and the peer's delayed ACK then holds
      // each one ~40 ms (bench/_gateway_nagle.ts). A batch of 1 KiB entries
      // is such a frame: it stalled Raft now and then and PBFT (whose
      // pre-prepares carry the batch) every time (48 ms for one write).
      ws = openWebSocket(raftLinkUrl(base, o.path));
    } catch {
      redial(base);
      return;
    }
    attach(ws, () => redial(base));
  };
  const dialed = new Set<string>();
  const redial = (base: string) => {
    if (closed || !dialed.has(new URL(base).origin)) return;
    const t = setTimeout(() => {
      timers.delete(t);
      if (dialed.has(new URL(base).origin)) dial(base);
    }, o.reconnectMs);
    timers.add(t);
  };
  const dialOnce = (base: string) => {
    const key = new URL(base).origin;
    if (dialed.has(key)) return;
    dialed.add(key);
    dial(base);
  };
  for (const p of o.peers) dialOnce(p);
  const sendTo = (to: string, f: Frame<M>): boolean => {
    const set = links.get(to);
    if (!set) return false;
    const frame = JSON.stringify(f);
    // Newest first: an older link may be a dead socket not yet closed.
    for (const l of [...set].reverse()) {
      if (l.ws.readyState === WebSocket.OPEN) {
        l.ws.send(frame);
        return true;
      }
    }
    return false;
  };

  return {
    send: (to, messages) => sendTo(to, { t: "m", m: messages }),
    control: (to, data) => sendTo(to, { t: "c", d: data }),
    dial(base) {
      if (!closed) dialOnce(base);
    },
    forget(base) {
      dialed.delete(new URL(base).origin);
    },
    handleUpgrade(req) {
      if (closed) return new Response("closed", { status: 503 });
      if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
        return new Response("expected a WebSocket upgrade", { status: 426 });
      }
      const { socket, response } = Deno.upgradeWebSocket(req);
      attach(socket);
      return response;
    },
    peers() {
      return [...addresses].map(([id, address]) => ({
        id,
        address,
        connected: [...links.get(id) ?? []].some((l) =>
          l.ws.readyState === WebSocket.OPEN
        ),
      }));
    },
    close() {
      closed = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const l of all) {
        try {
          l.ws.close(1001, "closing");
        } catch { /* closing */ }
      }
    },
  };
}
