/**
 * The node's own accept loop, so that no client can exhaust the node: a
 * connection budget per node and per client IP, a request-head timeout, a
 * keep-alive idle timeout, a close after answers that leave a request body
 * unread, and an accept loop that backs off when the process runs out of
 * file descriptors instead of dying.
 *
 * Why not `Deno.serve`: it has no connection hooks, its accept loop ends for
 * good on `EMFILE` (an uncaught rejection exits the process; catching it
 * leaves the port deaf), and it never times out a request head.
 *
 * How: each accepted connection's first request is read and answered here
 * (`_http1.ts`: a strict head parser, bodies, a response writer), so the
 * head is timed byte for byte and a WebSocket upgrade takes the raw
 * connection (`Deno.upgradeWebSocket` with a socket, the path Deno's
 * `node:http` uses). A connection that stays open is then handed to Deno's
 * native per-connection server (`serveHttpOnConnection`, what `Deno.serve`
 * runs per connection, reached through `Deno[Deno.internal]`), so keep-alive
 * traffic keeps `Deno.serve`'s speed (bench/http_health.ts), and closed by
 * aborting its signal. Upgrades cannot go through that server: Deno closes
 * an upgraded socket when a one-connection server ends. docs/http.md has the
 * measurements. A Deno without that entry point falls back to `Deno.serve`
 * and logs that the limits are off; `listener_test.ts` then fails, so an
 * upgrade cannot drop them silently.
 *
 * @module
 */
import type { Logger } from "../observe/logger.ts";
import type { MetricsRegistry } from "../observe/metrics.ts";
import { ipKey } from "./rate_limit.ts";
import {
  BodyReader,
  errorBytes,
  HeadError,
  readHead,
  type RequestHead,
  writeResponse,
} from "./_http1.ts";

/** Connection limits of one node; see {@linkcode defaultConnectionLimits}. */
export interface ConnectionLimits {
  /** Open connections the node holds at once (HTTP and upgraded WebSockets). */
  maxConnections: number;
  /** Open connections from one client IP (IPv6 by /64). */
  maxConnectionsPerIp: number;
  /** A new connection must deliver its first request head this soon. */
  headTimeoutMs: number;
  /** A keep-alive connection with no request in flight is closed after this long. */
  idleTimeoutMs: number;
  /** Largest request head (request line and header fields) in bytes. @default {65536} */
  maxHeadBytes?: number;
}

/** Options for {@linkcode serveGuarded}. */
export interface GuardedServeOptions {
  hostname: string;
  port: number;
  limits: ConnectionLimits;
  log: Logger;
  metrics: MetricsRegistry;
  /** Answer for a handler that threw. @default {a bare 500} */
  onError?: (err: unknown) => Response | Promise<Response>;
  /** How often refusals and accept errors are logged at most. @default {10_000} */
  logIntervalMs?: number;
}

/** A running server, shaped like the parts of `Deno.HttpServer` the node uses. */
export interface GuardedServer {
  addr: Deno.NetAddr;
  /** Settles once the accept loop and every HTTP connection have ended. */
  finished: Promise<void>;
  /**
   * Stops accepting; idle connections close, requests in flight finish.
   * Upgraded WebSockets are left to their owners (the gateway, the links).
   */
  shutdown(): Promise<void>;
  /** Open connections now, WebSockets included. */
  connections(): number;
  /** False when this Deno lacks the per-connection server and `Deno.serve` runs unguarded. */
  guarded: boolean;
}

type Handler = (
  req: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Response | Promise<Response>;

type ServeOnConnection = (
  conn: Deno.Conn,
  signal: AbortSignal,
  handler: Handler,
  onError: (err: unknown) => Response | Promise<Response>,
  onListen: () => void,
) => { finished: Promise<void> };

interface DenoInternals {
  serveHttpOnConnection?: ServeOnConnection;
  core?: { internalRidSymbol?: symbol };
}

function internals(): DenoInternals | undefined {
  const d = Deno as unknown as Record<symbol, unknown> & { internal?: symbol };
  return d.internal === undefined
    ? undefined
    : d[d.internal] as DenoInternals | undefined;
}

/** Deno's per-connection HTTP server, if this runtime exposes it. */
export function serveOnConnection(): ServeOnConnection | undefined {
  const i = internals();
  return typeof i?.serveHttpOnConnection === "function" &&
      typeof i.core?.internalRidSymbol === "symbol"
    ? i.serveHttpOnConnection
    : undefined;
}

/** The process's soft limit on open files, when the platform tells it. */
export function openFileLimit(): number | null {
  try {
    const text = Deno.readTextFileSync("/proc/self/limits");
    const m = /^Max open files\s+(\d+)/m.exec(text);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/**
 * Limits sized from the open-file limit (`null`: unknown, as it is without
 * `--allow-all`, which Deno requires to read `/proc/self/limits`): three
 * quarters of the descriptors, less 64 for KV, plugins' sockets and
 * outbound calls, go to clients, at most 16,384; unknown gives 4096. One IP
 * may hold a quarter. Either way the server lowers the budget by itself the
 * first time an accept runs out of descriptors.
 *
 * @example Usage
 * ```ts
 * import { defaultConnectionLimits } from "./listener.ts";
 * defaultConnectionLimits(1024).maxConnections; // 704
 * ```
 */
export function defaultConnectionLimits(
  fileLimit: number | null = openFileLimit(),
): ConnectionLimits {
  const maxConnections = fileLimit === null
    ? 4096
    : Math.max(16, Math.min(16_384, Math.floor(fileLimit * 0.75) - 64));
  return {
    maxConnections,
    maxConnectionsPerIp: Math.max(8, Math.floor(maxConnections / 4)),
    headTimeoutMs: 10_000,
    idleTimeoutMs: 30_000,
    maxHeadBytes: 65_536,
  };
}

/** Where a connection is in its life. */
type Phase = "head" | "first" | "native" | "websocket";

interface Conn {
  conn: Deno.Conn;
  ip: string;
  phase: Phase;
  /** Aborting it closes a connection handed to Deno's server. */
  ac?: AbortController;
  /** Requests whose response is not fully delivered yet. */
  inflight: number;
  closeAfter: boolean;
  timer?: ReturnType<typeof setTimeout>;
  /** When the last answer on Deno's server was delivered (idle since). */
  lastActive: number;
  ended: boolean;
}

/** A first request read here, so a WebSocket upgrade can take its socket. */
interface RawUpgrade {
  c: Conn;
  rest: () => Uint8Array;
  onUpgrade: (socket: WebSocket) => void;
}
const rawRequests = new WeakMap<Request, RawUpgrade>();
let upgradePatched = false;

/**
 * `Deno.upgradeWebSocket` on a request read by this module upgrades its raw
 * connection; on any other request it is Deno's own. Installed once, so the
 * gateway, plugins and Hono's helper need no changes.
 */
function patchUpgrade(ridSymbol: symbol): void {
  if (upgradePatched) return;
  upgradePatched = true;
  const original = Deno.upgradeWebSocket.bind(Deno);
  const upgrade: typeof Deno.upgradeWebSocket = (req, options) => {
    const raw = rawRequests.get(req);
    if (!raw) return original(req, options);
    rawRequests.delete(req);
    const { conn } = raw.c;
    const enc = new TextEncoder();
    // The shape Deno's upgrade expects of a node:net socket.
    const socket = {
      destroyed: false,
      _handle: {
        readStop() {},
        takeStream: () =>
          (conn as unknown as Record<symbol, number>)[ridSymbol],
      },
      write(text: string, done: (err?: unknown) => void) {
        const bytes = enc.encode(text);
        (async () => {
          let off = 0;
          while (off < bytes.length) {
            off += await conn.write(bytes.subarray(off));
          }
        })().then(() => done(), done);
        return true;
      },
    };
    const result = original(req, {
      ...options,
      socket,
      head: raw.rest(),
    } as unknown as Deno.UpgradeWebSocketOptions);
    raw.onUpgrade(result.socket);
    return result;
  };
  Object.defineProperty(Deno, "upgradeWebSocket", {
    value: upgrade,
    configurable: true,
    writable: true,
  });
}

/**
 * Aborts a connection's signal. When Deno's one-connection server has just
 * closed on its own (its `finished` not yet settled), its abort listener
 * throws `BadResource`, which Deno reports as an uncaught error that would
 * end the process: that one report is cancelled, since the connection is
 * gone, which is what the abort wanted.
 */
let aborting = false;
let abortGuard = false;
export function abortQuietly(ac: AbortController): void {
  if (!abortGuard) {
    abortGuard = true;
    globalThis.addEventListener("error", (e) => {
      if (aborting && e.error instanceof Deno.errors.BadResource) {
        e.preventDefault();
      }
    });
  }
  aborting = true;
  try {
    ac.abort();
  } finally {
    aborting = false;
  }
}

const REFUSAL = new TextEncoder().encode(
  "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n" +
    "retry-after: 1\r\ncontent-type: application/json\r\ncontent-length: 79\r\n\r\n" +
    '{"error":{"code":"overloaded","message":"connection budget full; retry later"}}',
);

function isFdExhaustion(err: unknown): boolean {
  const msg = err instanceof Error ? err.message : String(err);
  return /too many open files|os error 2[34]\b/i.test(msg);
}

/** The budget is lowered at most this often when descriptors run out. */
const LEARN_INTERVAL_MS = 2000;

/** How long an answer marked `connection: close` may linger before the node closes it. */
const LINGER_MS = 1000;

const isUpgradeRequest = (req: Request) =>
  /\bwebsocket\b/i.test(req.headers.get("upgrade") ?? "");

/**
 * Listens on `hostname:port` and serves `handler` within `limits`.
 * Throws like `Deno.listen` when the address cannot be bound.
 *
 * @example Usage
 * ```ts ignore
 * const server = serveGuarded(
 *   { hostname: "127.0.0.1", port: 0, limits: defaultConnectionLimits(), log, metrics },
 *   () => new Response("ok"),
 * );
 * await server.shutdown();
 * ```
 */
export function serveGuarded(
  options: GuardedServeOptions,
  handler: Handler,
): GuardedServer {
  const { limits, log, metrics } = options;
  const maxHeadBytes = limits.maxHeadBytes ?? 65_536;
  const onError = options.onError ??
    ((err: unknown) => {
      log.error("request handler threw", { error: err });
      return new Response(null, { status: 500 });
    });
  const serveConn = serveOnConnection();
  if (!serveConn) {
    log.warn(
      "this Deno has no per-connection HTTP server: connection limits and timeouts are OFF",
    );
    const server = Deno.serve({
      hostname: options.hostname,
      port: options.port,
      onListen: () => {},
      onError,
    }, handler);
    return {
      addr: server.addr,
      finished: server.finished,
      shutdown: () => server.shutdown(),
      connections: () => 0,
      guarded: false,
    };
  }
  patchUpgrade(internals()!.core!.internalRidSymbol!);

  const listener = Deno.listen({
    hostname: options.hostname,
    port: options.port,
  });
  const open = new Set<Conn>();
  const perIp = new Map<string, number>();
  const finishing = new Set<Promise<void>>();
  const opened = metrics.gauge(
    "plexus_http_connections",
    "Open client connections (HTTP and upgraded WebSockets)",
  );
  opened.set(0);
  // The budget in force: http.maxConnections, lowered to what the process's
  // descriptors allow once an accept has run out of them.
  let budget = limits.maxConnections;
  let lowered = 0;
  const budgetGauge = metrics.gauge(
    "plexus_http_connections_max",
    "Connection budget in force (http.maxConnections, lowered when the open-file limit is reached)",
  );
  budgetGauge.set(budget);
  const accepted = metrics.counter(
    "plexus_http_connections_accepted_total",
    "Client connections accepted",
  );
  const refused = metrics.counter(
    "plexus_http_connections_refused_total",
    "Connections answered 503 and closed at accept, by budget: node or ip",
  );
  const closed = metrics.counter(
    "plexus_http_connections_closed_total",
    "Connections the node closed, by reason: head_timeout, idle_timeout, evicted, bad_head, unread_body, late_upgrade",
  );
  const acceptErrors = metrics.counter(
    "plexus_http_accept_errors_total",
    "Failed accepts, by reason: fds (out of file descriptors) or other; the loop backs off and goes on",
  );

  // Logged at most once per interval per reason, with the count since.
  const logEvery = options.logIntervalMs ?? 10_000;
  const quiet = new Map<string, { at: number; skipped: number }>();
  const warnThrottled = (reason: string, msg: string, data: object) => {
    const now = Date.now();
    const q = quiet.get(reason);
    if (q && now - q.at < logEvery) {
      q.skipped++;
      return;
    }
    quiet.set(reason, { at: now, skipped: 0 });
    log.warn(msg, { ...data, reason, suppressedSinceLast: q?.skipped ?? 0 });
  };

  /** Forgets a connection (idempotent); the descriptor is closed by its owner. */
  const forget = (c: Conn) => {
    clearTimeout(c.timer);
    c.timer = undefined;
    if (c.ended) return;
    c.ended = true;
    open.delete(c);
    const n = (perIp.get(c.ip) ?? 1) - 1;
    if (n <= 0) perIp.delete(c.ip);
    else perIp.set(c.ip, n);
    opened.set(open.size);
  };
  /** Closes a connection the node gives up on; `reason` is counted. */
  const kill = (c: Conn, reason?: string) => {
    clearTimeout(c.timer);
    c.timer = undefined;
    if (c.ended || c.phase === "websocket") return;
    if (reason) closed.inc({ reason });
    if (c.phase === "native") {
      // Deno's server closes the socket; `finished` then forgets it.
      abortQuietly(c.ac!);
      return;
    }
    try {
      c.conn.close();
    } catch { /* already closed */ }
    forget(c);
  };
  const arm = (c: Conn, ms: number, reason: string) => {
    clearTimeout(c.timer);
    c.timer = setTimeout(() => kill(c, reason), ms);
  };
  /**
   * A connection that has not sent a whole request yet, from the address
   * holding the most connections (the oldest of its). Clients that have
   * been served keep their connections: only the idle timeout closes those;
   * and a flood from some addresses sheds its own connections first.
   */
  const victim = (): Conn | undefined => {
    let best: Conn | undefined;
    let bestCount = 0;
    for (const c of open) {
      if (c.phase !== "head") continue;
      const n = perIp.get(c.ip) ?? 0;
      if (n > bestCount) {
        best = c;
        bestCount = n;
      }
    }
    return best;
  };
  const refuse = (conn: Deno.Conn, which: "node" | "ip", ip: string) => {
    refused.inc({ budget: which });
    warnThrottled(
      `refused-${which}`,
      `connection refused: ${which} connection budget full`,
      {
        ip,
        open: open.size,
        maxConnections: budget,
        maxConnectionsPerIp: limits.maxConnectionsPerIp,
      },
    );
    // A fresh socket's send buffer is empty: this write does not wait on the peer.
    conn.write(REFUSAL).catch(() => {}).finally(() => {
      try {
        conn.close();
      } catch { /* already closed */ }
    });
  };

  /** Requests after the first, on Deno's own server. */
  const nativeHandler = (c: Conn): Handler => {
    const settle = () => {
      c.inflight--;
      if (c.inflight > 0 || c.ended) return;
      if (c.closeAfter) {
        // Deno's server closes after an answer marked `connection: close`
        // once it is written, unless the peer still owes body bytes: this
        // is the backstop (aborting at once could cut the answer short).
        clearTimeout(c.timer);
        c.timer = setTimeout(() => kill(c), LINGER_MS);
      } else if (stopping) kill(c);
      else c.lastActive = Date.now();
    };
    const done = (res: Response, req: Request) => {
      // An error answer to a request with a body the handler may not have
      // read: close rather than drain an unbounded body.
      if (
        res.status >= 400 &&
        (req.headers.has("transfer-encoding") ||
          Number(req.headers.get("content-length") ?? 0) > 0)
      ) {
        if (!c.closeAfter) closed.inc({ reason: "unread_body" });
        c.closeAfter = true;
        try {
          res.headers.set("connection", "close");
        } catch { /* immutable headers: the close still happens */ }
      }
      return res;
    };
    return (req, info) => {
      c.inflight++;
      info.completed.then(settle, settle);
      if (isUpgradeRequest(req)) {
        if (!c.closeAfter) closed.inc({ reason: "late_upgrade" });
        c.closeAfter = true;
        return Response.json({
          error: {
            code: "bad_request",
            message:
              "a WebSocket upgrade must be the first request on its connection",
          },
        }, { status: 400, headers: { connection: "close" } });
      }
      let res: Response | Promise<Response>;
      try {
        res = handler(req, info);
      } catch (err) {
        return Promise.resolve(onError(err)).then((r) => done(r, req));
      }
      return res instanceof Promise
        ? res.then((r) => done(r, req))
        : done(res, req);
    };
  };

  const handOver = (c: Conn) => {
    c.phase = "native";
    c.ac = new AbortController();
    let served: { finished: Promise<void> };
    try {
      served = serveConn(
        c.conn,
        c.ac.signal,
        nativeHandler(c),
        onError,
        () => {},
      );
    } catch (err) {
      warnThrottled("serve", "cannot serve a connection", { error: err });
      c.phase = "first";
      kill(c);
      return;
    }
    c.lastActive = Date.now();
    const f = served.finished.catch(() => {}).finally(() => {
      forget(c);
      finishing.delete(f);
    });
    finishing.add(f);
  };

  /** Reads, answers and hands on a connection's first request. */
  const serveFirst = async (c: Conn) => {
    const { conn } = c;
    let head: RequestHead | undefined;
    try {
      head = await readHead(conn, maxHeadBytes);
    } catch (err) {
      if (c.ended) return; // the head timeout or an eviction closed it
      if (err instanceof HeadError) {
        closed.inc({ reason: "bad_head" });
        await conn.write(errorBytes(err.status, err.message)).catch(() => {});
      }
      return kill(c);
    }
    if (c.ended) return;
    if (!head) return kill(c); // closed by the peer before a byte
    clearTimeout(c.timer);
    c.timer = undefined;
    c.phase = "first";
    c.inflight++;

    const remote = conn.remoteAddr as Deno.NetAddr;
    const host = head.headers.find(([k]) => k.toLowerCase() === "host")?.[1] ??
      `${(conn.localAddr as Deno.NetAddr).hostname}:${
        (conn.localAddr as Deno.NetAddr).port
      }`;
    let url: URL;
    try {
      url = head.target.startsWith("/")
        ? new URL(`http://${host}${head.target}`)
        : new URL(head.target);
      if (url.protocol !== "http:" && url.protocol !== "https:") {
        throw new TypeError("not http");
      }
    } catch {
      closed.inc({ reason: "bad_head" });
      await conn.write(errorBytes(400, "malformed target or host")).catch(
        () => {},
      );
      return kill(c);
    }
    const expect100 = new TextEncoder().encode("HTTP/1.1 100 Continue\r\n\r\n");
    const body = new BodyReader(conn, head, async () => {
      if (head.expectContinue) await conn.write(expect100);
    });
    const bodyless = head.method === "GET" || head.method === "HEAD";
    const signal = new AbortController();
    let req: Request;
    try {
      req = new Request(url, {
        method: head.method,
        headers: head.headers,
        body: bodyless || head.body.kind === "none" ? null : body.stream(),
        signal: signal.signal,
        // @ts-ignore: Deno's RequestInit takes `duplex` for streamed bodies.
        duplex: "half",
      });
    } catch (err) {
      // E.g. a method fetch forbids (CONNECT, TRACE).
      closed.inc({ reason: "bad_head" });
      await conn.write(errorBytes(400, (err as Error).message)).catch(() => {});
      return kill(c);
    }
    let upgraded = false;
    if (head.upgrade && bodyless) {
      rawRequests.set(req, {
        c,
        rest: () => body.extra,
        onUpgrade: (ws) => {
          upgraded = true;
          c.phase = "websocket";
          c.inflight--;
          ws.addEventListener("close", () => forget(c), { once: true });
        },
      });
    }
    let settleCompleted!: (ok: boolean) => void;
    const completed = new Promise<void>((resolve, reject) => {
      settleCompleted = (ok) =>
        ok ? resolve() : reject(new Error("response not delivered"));
    });
    completed.catch(() => {});
    const info = {
      remoteAddr: remote,
      completed,
    } as Deno.ServeHandlerInfo<Deno.NetAddr>;

    let res: Response;
    try {
      res = await handler(req, info);
    } catch (err) {
      res = await onError(err);
    }
    rawRequests.delete(req);
    if (upgraded) {
      settleCompleted(true);
      return;
    }
    if (res.status === 101) {
      // An upgrade answered without taking the socket cannot be sent as is.
      log.error("a 101 answer without a WebSocket upgrade; closing", {
        path: url.pathname,
      });
      settleCompleted(false);
      return kill(c);
    }
    const unread = !bodyless && !body.done;
    const close = !head.keepAlive || stopping || unread ||
      /\bclose\b/i.test(res.headers.get("connection") ?? "");
    try {
      await writeResponse(conn, res, {
        head: head.method === "HEAD",
        close,
      });
      settleCompleted(true);
    } catch {
      settleCompleted(false);
      signal.abort();
      return kill(c);
    }
    signal.abort();
    c.inflight--;
    if (close || body.extra.length > 0) {
      // Pipelined bytes read past this request cannot be handed on.
      return kill(c, unread ? "unread_body" : undefined);
    }
    handOver(c);
  };

  const admit = (conn: Deno.Conn) => {
    const remote = conn.remoteAddr as Deno.NetAddr;
    const ip = ipKey(remote.hostname);
    if ((perIp.get(ip) ?? 0) >= limits.maxConnectionsPerIp) {
      return refuse(conn, "ip", ip);
    }
    if (open.size >= budget) {
      const v = victim();
      if (!v) return refuse(conn, "node", ip);
      kill(v, "evicted");
      forget(v);
    }
    accepted.inc();
    const c: Conn = {
      conn,
      ip,
      phase: "head",
      inflight: 0,
      closeAfter: false,
      lastActive: 0,
      ended: false,
    };
    open.add(c);
    perIp.set(ip, (perIp.get(ip) ?? 0) + 1);
    opened.set(open.size);
    arm(c, limits.headTimeoutMs, "head_timeout");
    const f: Promise<void> = serveFirst(c).catch((err) => {
      warnThrottled("first", "first request failed", { error: err });
      kill(c);
    }).finally(() => finishing.delete(f));
    finishing.add(f);
  };

  // Idle keep-alive connections are found by one sweep rather than a timer
  // re-armed per request, which costs keep-alive throughput.
  const sweepMs = Math.max(25, Math.min(1000, limits.idleTimeoutMs / 4));
  const sweeper = setInterval(() => {
    const now = Date.now();
    for (const c of open) {
      if (
        c.phase === "native" && c.inflight === 0 && !c.closeAfter &&
        now - c.lastActive >= limits.idleTimeoutMs
      ) kill(c, "idle_timeout");
    }
  }, sweepMs);
  Deno.unrefTimer(sweeper);

  let stopping = false;
  const loop = (async () => {
    let backoffMs = 0;
    while (!stopping) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
        backoffMs = 0;
      } catch (err) {
        if (stopping || err instanceof Deno.errors.BadResource) break;
        const fds = isFdExhaustion(err);
        acceptErrors.inc({ reason: fds ? "fds" : "other" });
        warnThrottled(
          fds ? "accept-fds" : "accept",
          fds
            ? "out of file descriptors: not accepting for a moment"
            : "accept failed; retrying",
          { error: err, open: open.size, maxConnections: budget },
        );
        let shed = 0;
        if (fds) {
          // The limit is reached with this many open: that is the budget
          // from now on, less a margin for the node's own descriptors. Once
          // per interval only: closed sockets free their descriptors a
          // moment later, and a flood would otherwise ratchet it down.
          const now = Date.now();
          if (now - lowered > LEARN_INTERVAL_MS) {
            lowered = now;
            const learned = Math.max(16, open.size - 16);
            if (learned < budget) {
              budget = learned;
              budgetGauge.set(budget);
              log.warn("open-file limit reached: connection budget lowered", {
                maxConnections: budget,
                open: open.size,
              });
            }
          }
          // The connections still waiting for a head make room.
          for (let v = victim(); v && open.size >= budget; v = victim()) {
            kill(v, "evicted");
            forget(v);
            shed++;
          }
        }
        // Established clients are still served meanwhile; accepts resume
        // as soon as descriptors free up (a moment after a shed socket's).
        backoffMs = shed > 0
          ? 5
          : Math.min(1000, backoffMs ? backoffMs * 2 : 10);
        await new Promise((r) => setTimeout(r, backoffMs));
        continue;
      }
      if (stopping) {
        try {
          conn.close();
        } catch { /* gone */ }
        break;
      }
      admit(conn);
    }
  })();

  let settled!: () => void;
  const finished = new Promise<void>((r) => (settled = r));
  let closing: Promise<void> | undefined;
  const shutdown = () => {
    if (!stopping) {
      stopping = true;
      clearInterval(sweeper);
      try {
        listener.close();
      } catch { /* already closed */ }
      // Idle ones close now; busy ones close once their answer is out.
      for (const c of [...open]) {
        if (c.phase === "head") kill(c);
        else if (c.phase === "native" && c.inflight === 0) kill(c);
      }
    }
    closing ??= loop.then(async () => {
      while (finishing.size > 0) await Promise.all([...finishing]);
    }).then(settled);
    return closing;
  };

  return {
    addr: listener.addr as Deno.NetAddr,
    finished,
    shutdown,
    connections: () => open.size,
    guarded: true,
  };
}
