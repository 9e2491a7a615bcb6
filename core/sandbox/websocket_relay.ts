/**
 * WebSockets across the sandbox boundary: the node upgrades the real socket
 * on `GET /ws/{name}` and relays its frames to and from a stand-in socket
 * inside the sandbox, so a plugin's `ctx.websocket` handler runs unchanged
 * (it calls `Deno.upgradeWebSocket(req)` and uses the socket it gets).
 *
 * Inside, {@linkcode insideRelay} shims `Deno.upgradeWebSocket` for the
 * requests that came through the relay; on the node, {@linkcode nodeRelay}
 * owns the real sockets. Frames cross as calls (`ws.message` in, `ws.send`
 * out) whose answers are the backpressure: a socket whose unanswered bytes
 * in either direction pass `maxBufferBytes` is closed 1013 (try again
 * later), and one frame larger than that 1009 (too big). Opens and closes
 * cross as notes.
 *
 * @module
 */
import type { Handlers, Rpc } from "./rpc.ts";

/** A frame as it crosses: text, or the bytes of a binary frame. */
export type Frame = string | ArrayBuffer;

/** What the plugin's handler asked of `Deno.upgradeWebSocket`. */
export interface Accepted {
  /** The subprotocol the handler chose. */
  protocol?: string;
  /** Seconds without a pong before the socket is closed (Deno's option). */
  idleTimeout?: number;
}

/** Bytes a frame counts for the buffer cap (a text frame counts its length). */
function sizeOf(data: Frame): number {
  return typeof data === "string" ? data.length : data.byteLength;
}

/** Close reasons are at most 123 bytes on the wire. */
function reasonOf(text: string): string {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length <= 123) return text;
  return new TextDecoder().decode(bytes.slice(0, 120)).replace(/\uFFFD$/, "") +
    "...";
}

/** The node's side: the real sockets of one sandbox. */
export interface NodeRelay {
  /**
   * Upgrades `req`, which the plugin accepted as socket `id`, and relays
   * its frames to the sandbox.
   */
  attach(id: number, req: Request, accepted: Accepted): Response;
  /** What the node serves the sandbox: `ws.send`, `ws.close`. */
  readonly handlers: Handlers;
  /** Sockets open now. */
  readonly size: number;
  /** Closes every socket (the sandbox ended). */
  closeAll(code: number, reason: string): void;
}

/**
 * The node's side of the relay for the sandbox reached through `rpc`.
 *
 * @example Usage
 * ```ts ignore
 * const relay = nodeRelay(() => conn.rpc, { maxBufferBytes: 4 << 20 });
 * const accepted = await conn.rpc.call("ws.open", { name, id, req });
 * return relay.attach(id, req, accepted);
 * ```
 */
export function nodeRelay(
  rpc: () => Rpc,
  options: {
    maxBufferBytes: number;
    /** Told when a socket is closed for backpressure (1009, 1013). */
    onOverflow?: (code: number, reason: string) => void;
  },
): NodeRelay {
  const max = options.maxBufferBytes;
  const sockets = new Map<number, WebSocket>();
  // A client still sending when the close arrives may see an abnormal
  // closure rather than the code (Deno's client does): the node says why.
  const overflow = (socket: WebSocket, code: number, reason: string) => {
    options.onOverflow?.(code, reason);
    close(socket, code, reason);
  };
  const close = (socket: WebSocket, code: number, reason: string) => {
    if (socket.readyState > WebSocket.OPEN) return;
    try {
      socket.close(code, reasonOf(reason));
    } catch {
      // A socket still connecting cannot be closed with a code: end it.
      socket.close();
    }
  };
  return {
    attach(id, req, accepted) {
      const { socket, response } = Deno.upgradeWebSocket(req, {
        ...(accepted.protocol ? { protocol: accepted.protocol } : {}),
        ...(accepted.idleTimeout !== undefined
          ? { idleTimeout: accepted.idleTimeout }
          : {}),
      });
      socket.binaryType = "arraybuffer";
      sockets.set(id, socket);
      let inflight = 0;
      socket.onopen = () => rpc().notify("ws.opened", { id });
      socket.onmessage = (e: MessageEvent<Frame>) => {
        const size = sizeOf(e.data);
        if (size > max) {
          return overflow(socket, 1009, `frame over ${max} bytes`);
        }
        if (inflight + size > max) {
          return overflow(
            socket,
            1013,
            `the plugin is behind by more than ${max} bytes`,
          );
        }
        inflight += size;
        rpc().call("ws.message", { id, data: e.data }).then(
          () => void (inflight -= size),
          () => void (inflight -= size),
        );
      };
      socket.onerror = (e) => e.preventDefault();
      socket.onclose = (e: CloseEvent) => {
        sockets.delete(id);
        rpc().notify("ws.closed", {
          id,
          code: e.code,
          reason: e.reason,
          wasClean: e.wasClean,
        });
      };
      return response;
    },
    handlers: {
      "ws.send"(a) {
        const { id, data } = a as { id: number; data: Frame };
        const socket = sockets.get(id);
        if (!socket || socket.readyState !== WebSocket.OPEN) return 0;
        const size = sizeOf(data);
        if (size > max) {
          overflow(socket, 1009, `frame over ${max} bytes`);
          return 0;
        }
        if (socket.bufferedAmount + size > max) {
          overflow(
            socket,
            1013,
            `the client is behind by more than ${max} bytes`,
          );
          return 0;
        }
        socket.send(data);
        return socket.bufferedAmount;
      },
      "ws.close"(a) {
        const { id, code, reason } = a as {
          id: number;
          code?: number;
          reason?: string;
        };
        const socket = sockets.get(id);
        if (!socket) return;
        if (code === undefined) socket.close();
        else close(socket, code, reason ?? "");
      },
    },
    get size() {
      return sockets.size;
    },
    closeAll(code, reason) {
      for (const socket of sockets.values()) close(socket, code, reason);
      sockets.clear();
    },
  };
}

/** The sandbox's side: stand-in sockets and the `Deno.upgradeWebSocket` shim. */
export interface InsideRelay {
  /**
   * Runs `handler` on the relayed request `req` as socket `id`: the
   * handler's `Deno.upgradeWebSocket(req)` returns a relayed socket.
   * Resolves with what it accepted, or its own response when it did not
   * upgrade.
   */
  open(
    id: number,
    req: Request,
    handler: (req: Request) => Response | Promise<Response>,
  ): Promise<{ accepted: Accepted } | { response: Response }>;
  /** What the sandbox serves the node: `ws.opened`, `ws.message`, `ws.closed`. */
  readonly handlers: Handlers;
}

/**
 * The sandbox's side of the relay, calling the node through `rpc`. Replaces
 * `Deno.upgradeWebSocket` with one that relays the requests {@linkcode InsideRelay.open}
 * runs and passes any other to Deno's.
 *
 * @example Usage
 * ```ts ignore
 * const relay = insideRelay(rpc);
 * const r = await relay.open(id, toRequest(req), handler);
 * ```
 */
export function insideRelay(rpc: Rpc): InsideRelay {
  const sockets = new Map<number, RelaySocket>();
  const pending = new WeakMap<Request, number>();
  const upgraded = new WeakMap<Response, { id: number; accepted: Accepted }>();
  const deno = Deno.upgradeWebSocket;
  Object.defineProperty(Deno, "upgradeWebSocket", {
    configurable: true,
    writable: true,
    value(req: Request, options?: Deno.UpgradeWebSocketOptions) {
      const id = pending.get(req);
      if (id === undefined) return deno(req, options);
      if (sockets.has(id)) {
        throw new TypeError("this request was upgraded already");
      }
      const socket = new RelaySocket(id, req.url, options?.protocol ?? "", rpc);
      sockets.set(id, socket);
      // Stands for the 101 the node answers (a Response cannot be 101).
      const response = new Response(null, { status: 200 });
      upgraded.set(response, {
        id,
        accepted: {
          ...(options?.protocol ? { protocol: options.protocol } : {}),
          ...(options?.idleTimeout !== undefined
            ? { idleTimeout: options.idleTimeout }
            : {}),
        },
      });
      return { socket: socket as unknown as WebSocket, response };
    },
  });
  return {
    async open(id, req, handler) {
      pending.set(req, id);
      let res: Response;
      try {
        res = await handler(req);
      } catch (err) {
        sockets.delete(id);
        throw err;
      }
      const up = upgraded.get(res);
      if (up?.id === id) return { accepted: up.accepted };
      sockets.delete(id);
      return { response: res };
    },
    handlers: {
      "ws.opened"(a) {
        sockets.get((a as { id: number }).id)?.opened();
      },
      "ws.message"(a) {
        const { id, data } = a as { id: number; data: Frame };
        sockets.get(id)?.received(data);
      },
      "ws.closed"(a) {
        const { id, code, reason, wasClean } = a as {
          id: number;
          code: number;
          reason: string;
          wasClean: boolean;
        };
        sockets.get(id)?.closed(code, reason, wasClean);
        sockets.delete(id);
      },
    },
  };
}

type Listener = ((this: WebSocket, ev: Event) => unknown) | null;

/**
 * The socket a sandboxed handler gets: the WebSocket interface, its frames
 * relayed to the node's real socket. `bufferedAmount` counts the bytes sent
 * that the node has not yet taken, plus what the node's socket still holds.
 */
class RelaySocket extends EventTarget {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  readonly CONNECTING = 0;
  readonly OPEN = 1;
  readonly CLOSING = 2;
  readonly CLOSED = 3;
  readyState = 0;
  binaryType: BinaryType = "arraybuffer";
  readonly extensions = "";
  onopen: Listener = null;
  onmessage: Listener = null;
  onclose: Listener = null;
  onerror: Listener = null;
  #unsent = 0;
  #nodeBuffered = 0;
  /** Sends wait behind a Blob being read, so frames keep their order. */
  #chain: Promise<void> | undefined;
  #id: number;
  #rpc: Rpc;

  constructor(
    id: number,
    readonly url: string,
    readonly protocol: string,
    rpc: Rpc,
  ) {
    super();
    this.#id = id;
    this.#rpc = rpc;
  }

  get bufferedAmount(): number {
    return this.#unsent + this.#nodeBuffered;
  }

  send(data: string | ArrayBufferLike | ArrayBufferView | Blob): void {
    if (this.readyState === 0) {
      throw new DOMException("the socket is not open yet", "InvalidStateError");
    }
    if (this.readyState !== 1) return;
    if (data instanceof Blob || this.#chain) {
      const prev = this.#chain ?? Promise.resolve();
      const next: Promise<void> = prev.then(async () => {
        const frame = data instanceof Blob
          ? await data.arrayBuffer()
          : toFrame(data);
        this.#post(frame);
      }).finally(() => {
        if (this.#chain === next) this.#chain = undefined;
      });
      this.#chain = next;
      return;
    }
    this.#post(toFrame(data));
  }

  #post(frame: Frame): void {
    if (this.readyState !== 1) return;
    const size = sizeOf(frame);
    this.#unsent += size;
    this.#rpc.call<number>("ws.send", { id: this.#id, data: frame }).then(
      (buffered) => {
        this.#unsent -= size;
        this.#nodeBuffered = buffered;
      },
      () => void (this.#unsent -= size),
    );
  }

  close(code?: number, reason?: string): void {
    if (
      code !== undefined && code !== 1000 && (code < 3000 || code > 4999)
    ) {
      throw new DOMException(
        `close code ${code} is not 1000 or 3000-4999`,
        "InvalidAccessError",
      );
    }
    if (reason !== undefined && new TextEncoder().encode(reason).length > 123) {
      throw new DOMException("close reason over 123 bytes", "SyntaxError");
    }
    if (this.readyState >= 2) return;
    this.readyState = 2;
    this.#rpc.notify("ws.close", { id: this.#id, code, reason });
  }

  opened(): void {
    if (this.readyState !== 0) return;
    this.readyState = 1;
    this.#emit(new Event("open"));
  }

  received(data: Frame): void {
    if (this.readyState !== 1) return;
    const payload = typeof data === "string" || this.binaryType !== "blob"
      ? data
      : new Blob([data]);
    this.#emit(new MessageEvent("message", { data: payload }));
  }

  closed(code: number, reason: string, wasClean: boolean): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.#emit(new CloseEvent("close", { code, reason, wasClean }));
  }

  #emit(ev: Event): void {
    const handler = this[`on${ev.type}` as "onopen"];
    try {
      handler?.call(this as unknown as WebSocket, ev);
    } catch (err) {
      // As an event handler's throw anywhere: the global error (a crash here).
      reportError(err);
    }
    this.dispatchEvent(ev);
  }
}

function toFrame(data: string | ArrayBufferLike | ArrayBufferView): Frame {
  if (typeof data === "string") return data;
  if (ArrayBuffer.isView(data)) {
    return data.buffer.slice(
      data.byteOffset,
      data.byteOffset + data.byteLength,
    ) as ArrayBuffer;
  }
  return (data as ArrayBuffer).slice(0);
}
