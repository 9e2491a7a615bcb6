/**
 * Calls across a sandbox boundary (a Worker's message port; later a child
 * process's stdio): each side serves named methods and calls the other's,
 * with structured-clone arguments, one deadline per call and typed errors
 * that keep their `name`, `code`, `status` and `retryable` across.
 *
 * On the wire every post is one flat array of messages, each a kind and its
 * fields: `0, id, method, args` (a call), answered by `1, id, value` or
 * `2, id, error`; `3, method, args` (a note) expects no answer. Arrays, not
 * objects with named fields: a structured clone writes every property name
 * of every object, and reading objects back costs about twice as much.
 *
 * @module
 */
import { PlexusError } from "../errors.ts";

/** The end of a channel: a Worker, a MessagePort or the worker's `self`. */
export interface Port {
  postMessage(message: unknown): void;
  onmessage: ((ev: MessageEvent) => unknown) | null;
}

/** What one side serves: method name → handler of the structured-clone args. */
export type Handlers = Record<
  string,
  (args: unknown) => unknown | Promise<unknown>
>;

/** An error as it crosses the boundary. */
export interface WireError {
  name: string;
  message: string;
  code?: string;
  status?: number;
  retryable?: boolean;
}

/** Options of {@linkcode createRpc}. */
export interface RpcOptions {
  /** Deadline of a call without its own. @default {10000} */
  timeoutMs?: number;
  /** Calls waiting for an answer at once; more are refused. @default {10000} */
  maxPending?: number;
  /** Told about a message that is not a wire message (it is dropped). */
  onMalformed?: (message: unknown) => void;
  /**
   * Asked for each call and note the other side sends: `false` refuses it
   * (a call is answered `over_budget`, 429; a note is dropped). Answers to
   * this side's own calls always pass. @default {() => true}
   */
  admit?: () => boolean;
}

/** One side of the channel. */
export interface Rpc {
  /** Calls `method` on the other side and resolves with its answer. */
  call<T = unknown>(
    method: string,
    args?: unknown,
    options?: { timeoutMs?: number },
  ): Promise<T>;
  /** Sends `method` with no answer expected. */
  notify(method: string, args?: unknown): void;
  /** Calls waiting for an answer. */
  readonly pending: number;
  /** Rejects every waiting call with `reason`; later calls reject at once. */
  close(reason: string): void;
}

/** A call across the sandbox that failed on the other side or timed out. */
export class SandboxCallError extends PlexusError {
  override name = "SandboxCallError";
  /** `message` says what failed; `code`, `status`, `retryable` are the original's. */
  constructor(
    code: string,
    message: string,
    options: { status?: number; retryable?: boolean; remoteName?: string } = {},
  ) {
    super(code, message, {
      status: options.status ?? 500,
      retryable: options.retryable ?? false,
      data: options.remoteName ? { remoteName: options.remoteName } : undefined,
    });
  }
}

/** The wire form of a thrown value. */
export function toWireError(err: unknown): WireError {
  if (err instanceof Error) {
    const e = err as Error & {
      code?: unknown;
      status?: unknown;
      retryable?: unknown;
    };
    return {
      name: e.name,
      message: e.message,
      ...(typeof e.code === "string" ? { code: e.code } : {}),
      ...(typeof e.status === "number" ? { status: e.status } : {}),
      ...(typeof e.retryable === "boolean" ? { retryable: e.retryable } : {}),
    };
  }
  return { name: "Error", message: String(err) };
}

function fromWireError(e: WireError): SandboxCallError {
  return new SandboxCallError(e.code ?? "sandbox_error", e.message, {
    status: e.status,
    retryable: e.retryable,
    remoteName: e.name,
  });
}

/** The kinds of message, first of each message's fields on the wire. */
const CALL = 0;
const OK = 1;
const ERR = 2;
const NOTE = 3;

function isThenable(x: unknown): x is PromiseLike<unknown> {
  return x !== null && typeof x === "object" &&
    typeof (x as { then?: unknown }).then === "function";
}

/**
 * Serves `handlers` on `port` and returns the caller of the other side's.
 *
 * @example Usage
 * ```ts
 * import { createRpc } from "./rpc.ts";
 * import assert from "node:assert/strict";
 * const { port1, port2 } = new MessageChannel();
 * const a = createRpc(port1, { add: (x) => (x as number[])[0] + (x as number[])[1] });
 * const b = createRpc(port2, {});
 * assert.equal(await b.call("add", [2, 3]), 5);
 * a.close("done"); b.close("done"); port1.close(); port2.close();
 * ```
 */
export function createRpc(
  port: Port,
  handlers: Handlers,
  options: RpcOptions = {},
): Rpc {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const maxPending = options.maxPending ?? 10_000;
  const waiting = new Map<
    number,
    {
      resolve: (v: unknown) => void;
      reject: (e: Error) => void;
      /** When it times out, `performance.now()` ms. */
      deadline: number;
      method: string;
      ms: number;
    }
  >();
  let nextId = 1;
  let closed: string | undefined;
  // One sweep for every deadline, not a timer per call (a timer per call
  // costs more than the call on a busy route). A deadline fires up to one
  // sweep late.
  const SWEEP_MS = 25;
  let sweeper: ReturnType<typeof setInterval> | undefined;
  const sweep = () => {
    const now = performance.now();
    for (const [id, w] of waiting) {
      if (w.deadline > now) continue;
      waiting.delete(id);
      w.reject(
        new SandboxCallError(
          "timeout",
          `'${w.method}' across the sandbox did not answer within ${w.ms} ms`,
          { status: 504, retryable: true },
        ),
      );
    }
    if (waiting.size === 0) {
      clearInterval(sweeper);
      sweeper = undefined;
    }
  };

  // Messages posted in one iteration of the event loop go as one batch: one
  // structured clone and one wake-up of the other side instead of many. The
  // batch leaves in the iteration's check phase (setImmediate), after every
  // I/O callback of the iteration: Deno hands over HTTP requests and port
  // messages one callback each, so a microtask flush sent one message per
  // request under load (~12 µs of CPU on each side per message), while
  // setImmediate adds no timer and no wait for the next iteration.
  let outbox: unknown[] = [];
  const flush = () => {
    const batch = outbox;
    outbox = [];
    if (closed !== undefined || batch.length === 0) return;
    try {
      port.postMessage(batch);
    } catch {
      // One value in the batch cannot be cloned: send them one by one, so
      // only its own call fails.
      for (let i = 0; i < batch.length;) {
        const kind = batch[i];
        const n = kind === CALL ? 4 : 3;
        const msg = batch.slice(i, i + n);
        i += n;
        try {
          port.postMessage(msg);
        } catch (err) {
          if (kind === CALL) {
            const id = msg[1] as number;
            const w = waiting.get(id);
            waiting.delete(id);
            w?.reject(err as Error);
          } else if (kind === OK) {
            port.postMessage([ERR, msg[1], toWireError(err)]);
          }
        }
      }
    }
  };
  const post = (kind: number, x: unknown, y: unknown, z?: unknown) => {
    if (outbox.length === 0) setImmediate(flush);
    if (kind === CALL) outbox.push(kind, x, y, z);
    else outbox.push(kind, x, y);
  };

  const ok = (id: number, v: unknown) => {
    if (closed === undefined) post(OK, id, v);
  };
  const fail = (id: number, err: unknown) => {
    if (closed === undefined) post(ERR, id, toWireError(err));
  };
  // A handler runs at once and a plain value is answered without a promise:
  // every promise hop is an allocation and a microtask per call.
  const answer = (id: number, h: Handlers[string], a: unknown) => {
    let v: unknown;
    try {
      v = h(a);
    } catch (err) {
      return fail(id, err);
    }
    if (isThenable(v)) v.then((x) => ok(id, x), (err) => fail(id, err));
    else ok(id, v);
  };
  const handler = (m: unknown) =>
    typeof m === "string" && Object.hasOwn(handlers, m)
      ? handlers[m]
      : undefined;

  const admit = options.admit ?? (() => true);
  port.onmessage = (ev: MessageEvent) => {
    const data: unknown = ev.data;
    if (!Array.isArray(data)) return options.onMalformed?.(data);
    for (let i = 0; i < data.length;) {
      const kind = data[i];
      if (kind === CALL && typeof data[i + 1] === "number") {
        const id = data[i + 1] as number, m = data[i + 2], a = data[i + 3];
        i += 4;
        if (!admit()) {
          post(ERR, id, {
            name: "SandboxCallError",
            code: "over_budget",
            message: "over the sandbox's message budget; slow down",
            status: 429,
            retryable: true,
          });
          continue;
        }
        const h = handler(m);
        if (h) answer(id, h, a);
        else {
          fail(
            id,
            new SandboxCallError(
              "no_method",
              `no method '${String(m).slice(0, 64)}' across the sandbox`,
            ),
          );
        }
      } else if (kind === NOTE) {
        const m = data[i + 1], a = data[i + 2];
        i += 3;
        if (!admit()) continue;
        const h = handler(m);
        if (!h) continue;
        try {
          const v = h(a);
          if (isThenable(v)) v.then(undefined, () => {});
        } catch {
          // A note has no one to tell.
        }
      } else if (kind === OK || kind === ERR) {
        const id = data[i + 1] as number, v = data[i + 2];
        i += 3;
        const w = waiting.get(id);
        if (!w) continue; // answered after its deadline
        waiting.delete(id);
        if (kind === OK) w.resolve(v);
        else w.reject(fromWireError(v as WireError));
      } else {
        // Not a message: the rest of this post cannot be read either.
        return options.onMalformed?.(data);
      }
    }
  };

  return {
    call<T>(
      method: string,
      args?: unknown,
      o?: { timeoutMs?: number },
    ): Promise<T> {
      if (closed !== undefined) {
        return Promise.reject(
          new SandboxCallError("sandbox_closed", closed, { status: 503 }),
        );
      }
      if (waiting.size >= maxPending) {
        return Promise.reject(
          new SandboxCallError(
            "sandbox_busy",
            `${waiting.size} calls already wait across the sandbox`,
            { status: 503, retryable: true },
          ),
        );
      }
      const id = nextId++;
      const ms = o?.timeoutMs ?? timeoutMs;
      return new Promise<T>((resolve, reject) => {
        waiting.set(id, {
          resolve: resolve as (v: unknown) => void,
          reject,
          deadline: performance.now() + ms,
          method,
          ms,
        });
        sweeper ??= setInterval(sweep, SWEEP_MS);
        post(CALL, id, method, args);
      });
    },
    notify(method, args) {
      if (closed === undefined) post(NOTE, method, args);
    },
    get pending() {
      return waiting.size;
    },
    close(reason) {
      if (closed !== undefined) return;
      closed = reason;
      clearInterval(sweeper);
      sweeper = undefined;
      for (const [id, w] of waiting) {
        w.reject(
          new SandboxCallError("sandbox_closed", reason, { status: 503 }),
        );
        waiting.delete(id);
      }
      port.onmessage = null;
    },
  };
}
