/**
 * The agent SDK's outgoing publishes and requests, from the call to the
 * node's answer: a bounded buffer that sends the most urgent priority first
 * (9 before 0) and the oldest first within a priority, keeps the most
 * urgent, oldest calls when full, times calls out, and puts publishes sent
 * on a connection that dropped back in line for the next one (requests
 * fail instead: they are at-most-once).
 *
 * The queue does not write records: its client takes calls with
 * {@linkcode SendQueue.next}, marks them `sentOn` a connection, and settles
 * them when the node answers.
 *
 * @module
 */
import { type Deadline, Deadlines } from "../core/resilience/deadlines.ts";
import { AgentError } from "./errors.ts";

/**
 * The calls' timeouts of every client in the process, in 5 ms buckets under
 * one timer (a process with 100 agents keeps one timer, not 100).
 */
const CALL_DEADLINES = new Deadlines();

/** A publish (`msg`) or request (`req`) as its caller made it. */
export interface OutgoingCall {
  /** Record type. */
  type: "msg" | "req";
  /** The full channel, `agent.{id}.{name}`. */
  ch: string;
  /** 0-9, 9 most urgent. */
  prio: number;
  /** Message type (`mt` header). */
  mt?: string;
  /** Correlation id (`cid` header). */
  cid?: string;
  /** The JSON body. */
  body: Uint8Array;
  /** Whether to sign it with the agent key. */
  signed: boolean;
}

/** A publish or request between the call and its answer. */
export interface Outgoing<C> extends OutgoingCall {
  /** Call order: FIFO within a priority. */
  order: number;
  /** The record id (the same for every send of a publish). */
  id: string;
  /** Settles the call's promise with the answer. */
  resolve(value: unknown): void;
  /** Settles the call's promise with an error. */
  reject(err: Error): void;
  /** The call's timeout. */
  deadline?: Deadline;
  /** The connection it was last sent on; unset while it waits in the queue. */
  sentOn?: C;
  /** How often it was written (above 1: sent again after a reconnect). */
  sends: number;
  /** Whether it has settled. */
  done: boolean;
}

/** Options of {@linkcode SendQueue}. */
export interface SendQueueOptions {
  /** Most calls outstanding (queued or awaiting an answer). */
  maxQueued: number;
  /** Called once for each call refused or dropped because the queue was full. @default {undefined} */
  onDropped?: () => void;
  /** Called whenever a settled call leaves nothing outstanding. @default {undefined} */
  onIdle?: () => void;
}

/**
 * The outstanding publishes and requests of one client, `C` being its
 * connection type.
 *
 * @example Usage
 * ```ts
 * import { SendQueue } from "./send_queue.ts";
 * import assert from "node:assert/strict";
 * const queue = new SendQueue<string>({ maxQueued: 10 });
 * const call = { type: "msg" as const, ch: "agent.a.x", body: new Uint8Array(), signed: false };
 * const low = queue.add({ ...call, prio: 1 }, 0);
 * const high = queue.add({ ...call, prio: 8 }, 0);
 * const first = queue.next()!;
 * assert.equal(first.prio, 8); // the most urgent first
 * first.sentOn = "conn-1";
 * queue.settle(first); // the node acknowledged it
 * await high;
 * const second = queue.next()!;
 * second.sentOn = "conn-1";
 * queue.connectionLost("conn-1"); // a publish goes back in line
 * assert.equal(queue.next(), second);
 * queue.settle(second);
 * await low;
 * ```
 */
export class SendQueue<C> {
  readonly #maxQueued: number;
  readonly #onDropped: () => void;
  readonly #onIdle: () => void;
  #order = 0;
  /** Publishes and requests not yet answered, by record id. */
  readonly #pending = new Map<string, Outgoing<C>>();
  /** The unsent ones, sorted by priority (high first), then call order. */
  readonly #queue: Outgoing<C>[] = [];

  /** An empty queue. */
  constructor(options: SendQueueOptions) {
    this.#maxQueued = options.maxQueued;
    this.#onDropped = options.onDropped ?? (() => {});
    this.#onIdle = options.onIdle ?? (() => {});
  }

  /** Calls outstanding: queued or sent and not yet answered. */
  get size(): number {
    return this.#pending.size;
  }

  /** Calls waiting to be sent. */
  get queued(): number {
    return this.#queue.length;
  }

  /** Calls sent and not yet answered. */
  inFlight(): number {
    let n = 0;
    for (const o of this.#pending.values()) if (o.sentOn) n++;
    return n;
  }

  /** The outstanding call with record id `id`. */
  get(id: string): Outgoing<C> | undefined {
    return this.#pending.get(id);
  }

  /**
   * Queues a call; the promise settles with its answer, or rejects with
   * `timeout` after `timeoutMs` (0: never). When `maxQueued` calls are
   * outstanding it keeps the most urgent, oldest calls: it throws
   * {@linkcode AgentError} `queue_full` unless the last queued call is less
   * urgent, which is then rejected with it instead. In-flight calls are
   * never dropped.
   */
  add(call: OutgoingCall, timeoutMs: number): Promise<unknown> {
    const d = Promise.withResolvers<unknown>();
    const o: Outgoing<C> = {
      type: call.type,
      ch: call.ch,
      prio: call.prio,
      mt: call.mt,
      cid: call.cid,
      body: call.body,
      signed: call.signed,
      order: this.#order++,
      id: crypto.randomUUID(),
      resolve: d.resolve,
      reject: d.reject,
      deadline: undefined,
      sentOn: undefined,
      sends: 0,
      done: false,
    };
    if (this.#pending.size >= this.#maxQueued) {
      // Keep the most urgent, oldest calls: the last queued entry is the
      // least urgent and newest; in-flight ones are never dropped.
      const last = this.#queue.at(-1);
      const full = new AgentError(
        "queue_full",
        `Cannot send on ${o.ch}: ${this.#pending.size} publishes and requests are outstanding (maxQueued ${this.#maxQueued})`,
      );
      this.#onDropped();
      if (!last || last.prio >= o.prio) throw full;
      this.settle(last, full);
    }
    this.#pending.set(o.id, o);
    const { type } = o;
    if (timeoutMs > 0) {
      o.deadline = CALL_DEADLINES.add(
        timeoutMs,
        () =>
          this.settle(
            o,
            new AgentError(
              "timeout",
              `${
                type === "msg" ? "publish" : "request"
              } ${o.id} on ${o.ch}: no ${
                type === "msg" ? "ack" : "answer"
              } within ${timeoutMs} ms`,
            ),
          ),
      );
    }
    this.requeue(o);
    return d.promise;
  }

  /** Takes the most urgent, oldest queued call to send. */
  next(): Outgoing<C> | undefined {
    return this.#queue.shift();
  }

  /** Puts `o` (back) in the queue in (priority desc, order asc) order. */
  requeue(o: Outgoing<C>): void {
    const q = this.#queue;
    let lo = 0, hi = q.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const m = q[mid];
      if (m.prio > o.prio || (m.prio === o.prio && m.order < o.order)) {
        lo = mid + 1;
      } else hi = mid;
    }
    q.splice(lo, 0, o);
  }

  /** Ends call `o`: rejects it with `err`, else resolves it with `value` (once). */
  settle(o: Outgoing<C>, err?: Error, value?: unknown): void {
    if (o.done) return;
    o.done = true;
    if (o.deadline) CALL_DEADLINES.cancel(o.deadline);
    this.#pending.delete(o.id);
    if (!o.sentOn) {
      const at = this.#queue.indexOf(o);
      if (at >= 0) this.#queue.splice(at, 1);
    }
    if (err) o.reject(err);
    else o.resolve(value);
    if (this.#pending.size === 0) this.#onIdle();
  }

  /**
   * `conn` is gone: its unanswered publishes go back in line (to be sent
   * again, same id, after the next handshake) and its requests reject with
   * `unavailable`.
   */
  connectionLost(conn: C): void {
    for (const o of this.#pending.values()) {
      if (o.sentOn !== conn) continue;
      o.sentOn = undefined;
      if (o.type === "req") {
        this.settle(
          o,
          new AgentError(
            "unavailable",
            `request ${o.id} on ${o.ch}: the connection closed before the reply`,
          ),
        );
      } else this.requeue(o);
    }
  }

  /** Rejects every outstanding call with `err`. */
  rejectAll(err: Error): void {
    for (const o of [...this.#pending.values()]) this.settle(o, err);
  }
}
