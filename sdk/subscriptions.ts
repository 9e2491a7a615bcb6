/**
 * The agent SDK's backend channels: the handler registry (a message handler
 * and a request handler per `backend.{id}.{name}` channel), the `sub` and
 * `unsub` records awaiting the node's `ok` or `err`, the renewal of every
 * subscription after a reconnect, and the backend messages held until their
 * channel has a handler.
 *
 * The registry does not write records: it asks its client to, through
 * {@linkcode SubscriptionsOptions.send}.
 *
 * @module
 */
import type { OpenedRecord } from "./protocol/record.ts";
import { AgentError, errorFromBody } from "./errors.ts";
import type { MessageHandler, RequestHandler } from "./client.ts";

export type { OpenedRecord } from "./protocol/record.ts";

/** Most backend messages held for lack of a handler; the oldest go first. */
export const MAX_HELD_UNHANDLED = 1000;

/** One backend channel with a handler, `C` being the client's connection type. */
export interface ChannelEntry<C> {
  /** The full channel, `backend.{id}.{name}`. */
  ch: string;
  /** Its message handler. */
  onMessage?: MessageHandler;
  /** Its request handler. */
  onRequest?: RequestHandler;
  /** The connection on which the node confirmed the subscription. */
  confirmedOn?: C;
  /** The connection a `sub` is outstanding on. */
  pendingOn?: C;
  /** Callers of {@linkcode Subscriptions.confirm} waiting for the node. */
  waiters: PromiseWithResolvers<void>[];
}

/** A sub/unsub awaiting `ok`/`err`. */
interface Control<C> {
  conn: C;
  kind: "sub" | "unsub";
  entry?: ChannelEntry<C>;
  done?: PromiseWithResolvers<void>;
  timer?: ReturnType<typeof setTimeout>;
}

/** How {@linkcode Subscriptions} reaches its client. */
export interface SubscriptionsOptions<C> {
  /** How long a `sub` or `unsub` waits for `ok` or `err`, ms; 0 waits forever. */
  requestTimeoutMs: number;
  /** The connection records may go out on: ready, and the client not closed. */
  ready(): C | undefined;
  /** Writes a `sub` or `unsub` record (empty body) on `ch` with record id `id`. */
  send(conn: C, ch: string, type: "sub" | "unsub", id: string): void;
  /** The node refused to renew the subscription of `ch` (its roles changed); the entry is dropped. */
  onRefused(error: AgentError, ch: string): void;
}

/**
 * The backend channels of one client, `C` being its connection type.
 *
 * @example Usage
 * ```ts
 * import { Subscriptions } from "./subscriptions.ts";
 * import assert from "node:assert/strict";
 * const sent: [string, string, string][] = [];
 * const subs = new Subscriptions<string>({
 *   requestTimeoutMs: 0,
 *   ready: () => "conn-1",
 *   send: (_conn, ch, type, id) => sent.push([ch, type, id]),
 *   onRefused: () => {},
 * });
 * const entry = subs.entry("backend.a.commands");
 * entry.onMessage = () => {};
 * const confirmed = subs.confirm(entry); // sends `sub`
 * const [[ch, type, id]] = sent;
 * assert.deepEqual([ch, type], ["backend.a.commands", "sub"]);
 * assert.equal(subs.answer(id, "ok", new Uint8Array()), true);
 * await confirmed;
 * subs.renew("conn-2"); // after a reconnect
 * assert.equal(sent[1][1], "sub");
 * ```
 */
export class Subscriptions<C> {
  readonly #options: SubscriptionsOptions<C>;
  readonly #channels = new Map<string, ChannelEntry<C>>();
  readonly #controls = new Map<string, Control<C>>();
  /** Backend messages waiting for a handler, by channel. */
  readonly #held = new Map<string, OpenedRecord[]>();
  #heldCount = 0;

  /** An empty registry. */
  constructor(options: SubscriptionsOptions<C>) {
    this.#options = options;
  }

  /** The entry of `ch`, if it has one. */
  get(ch: string): ChannelEntry<C> | undefined {
    return this.#channels.get(ch);
  }

  /** The entry of `ch`, made (without handlers) when it has none. */
  entry(ch: string): ChannelEntry<C> {
    let entry = this.#channels.get(ch);
    if (!entry) this.#channels.set(ch, entry = { ch, waiters: [] });
    return entry;
  }

  /** Forgets `entry` when it has no handler left. */
  dropIfUnused(entry: ChannelEntry<C>): void {
    if (entry.onMessage || entry.onRequest) return;
    if (this.#channels.get(entry.ch) === entry) this.#channels.delete(entry.ch);
  }

  /** Resolves once the node has confirmed `entry` on the current connection. */
  confirm(entry: ChannelEntry<C>): Promise<void> {
    const conn = this.#options.ready();
    if (conn !== undefined && entry.confirmedOn === conn) {
      return Promise.resolve();
    }
    const d = Promise.withResolvers<void>();
    entry.waiters.push(d);
    if (conn !== undefined && entry.pendingOn !== conn) {
      this.#sendSub(entry, conn);
    }
    return d.promise;
  }

  /** Subscribes every channel again on `conn`, a connection that just became ready. */
  renew(conn: C): void {
    for (const entry of this.#channels.values()) this.#sendSub(entry, conn);
  }

  #sendSub(entry: ChannelEntry<C>, conn: C): void {
    const id = crypto.randomUUID();
    entry.pendingOn = conn;
    entry.confirmedOn = undefined;
    const control: Control<C> = { conn, kind: "sub", entry };
    this.#controls.set(id, control);
    control.timer = this.#controlTimer(id);
    this.#options.send(conn, entry.ch, "sub", id);
  }

  #controlTimer(id: string): ReturnType<typeof setTimeout> | undefined {
    const timeoutMs = this.#options.requestTimeoutMs;
    if (timeoutMs <= 0) return undefined;
    return setTimeout(() => {
      const c = this.#controls.get(id);
      if (!c) return;
      this.#controls.delete(id);
      const err = new AgentError(
        "timeout",
        `${c.kind} ${c.entry?.ch ?? ""}: no answer within ${timeoutMs} ms`,
      );
      if (c.entry) {
        c.entry.pendingOn = undefined;
        for (const w of c.entry.waiters.splice(0)) w.reject(err);
      }
      c.done?.reject(err);
    }, timeoutMs);
  }

  /**
   * Takes the node's `ok` or `err` for record `id`; false when `id` is not
   * a `sub` or `unsub` of this registry. A refused `sub` drops the entry.
   */
  answer(id: string, type: "ok" | "err", body: Uint8Array): boolean {
    const c = this.#controls.get(id);
    if (!c) return false;
    clearTimeout(c.timer);
    this.#controls.delete(id);
    if (c.kind === "unsub") {
      c.done?.resolve();
      return true;
    }
    const entry = c.entry!;
    if (entry.pendingOn === c.conn) entry.pendingOn = undefined;
    if (type === "ok") {
      entry.confirmedOn = c.conn;
      for (const w of entry.waiters.splice(0)) w.resolve();
      return true;
    }
    const err = errorFromBody(body);
    err.message = `Cannot subscribe to ${entry.ch}: ${err.message}`;
    const waiters = entry.waiters.splice(0);
    if (waiters.length === 0) {
      // A renewal the node now refuses (roles changed): drop it, say so.
      this.#options.onRefused(err, entry.ch);
    }
    for (const w of waiters) w.reject(err);
    entry.onMessage = undefined;
    entry.onRequest = undefined;
    this.dropIfUnused(entry);
    return true;
  }

  /** Removes handler `fn` of `ch`; unsubscribes at the node when none is left. */
  async removeHandler(
    ch: string,
    field: "onMessage" | "onRequest",
    fn: MessageHandler | RequestHandler,
  ): Promise<void> {
    const entry = this.#channels.get(ch);
    if (!entry || entry[field] !== fn) return;
    entry[field] = undefined;
    if (!entry.onMessage && !entry.onRequest) {
      await this.unsubscribe(entry);
    }
  }

  /**
   * Drops `entry` (when it has no handler left), rejects its waiters with
   * `closed`, and unsubscribes at the node when connected; resolves on the
   * node's answer.
   */
  async unsubscribe(entry: ChannelEntry<C>): Promise<void> {
    this.dropIfUnused(entry);
    for (const w of entry.waiters.splice(0)) {
      w.reject(new AgentError("closed", `unsubscribed from ${entry.ch}`));
    }
    const conn = this.#options.ready();
    if (conn === undefined) return;
    const id = crypto.randomUUID();
    const done = Promise.withResolvers<void>();
    const control: Control<C> = { conn, kind: "unsub", done };
    this.#controls.set(id, control);
    control.timer = this.#controlTimer(id);
    this.#options.send(conn, entry.ch, "unsub", id);
    await done.promise;
  }

  /**
   * `conn` is gone: its `unsub`s are done (a session's subscriptions end
   * with it), its `sub`s are forgotten, and no channel counts as confirmed
   * on it.
   */
  connectionLost(conn: C): void {
    for (const [id, c] of this.#controls) {
      if (c.conn !== conn) continue;
      clearTimeout(c.timer);
      this.#controls.delete(id);
      // A session's subscriptions end with it: an unsub is done.
      c.done?.resolve();
    }
    for (const entry of this.#channels.values()) {
      if (entry.confirmedOn === conn) entry.confirmedOn = undefined;
      if (entry.pendingOn === conn) entry.pendingOn = undefined;
    }
  }

  /** The client stopped: rejects every waiting caller with `err` and drops held messages. */
  close(err: Error): void {
    for (const [id, c] of this.#controls) {
      clearTimeout(c.timer);
      this.#controls.delete(id);
      c.done?.reject(err);
    }
    for (const entry of this.#channels.values()) {
      for (const w of entry.waiters.splice(0)) w.reject(err);
    }
    this.#held.clear();
    this.#heldCount = 0;
  }

  /**
   * Holds a backend message whose channel has no handler yet; past
   * {@linkcode MAX_HELD_UNHANDLED} the oldest held message is dropped.
   */
  hold(rec: OpenedRecord): void {
    let list = this.#held.get(rec.header.ch);
    if (!list) this.#held.set(rec.header.ch, list = []);
    list.push(rec);
    if (++this.#heldCount > MAX_HELD_UNHANDLED) {
      const [ch, oldest] = this.#held.entries().next().value!;
      oldest.shift();
      if (oldest.length === 0) this.#held.delete(ch);
      this.#heldCount--;
    }
  }

  /** Takes the messages held for `ch`, oldest first. */
  release(ch: string): OpenedRecord[] {
    const list = this.#held.get(ch);
    if (!list) return [];
    this.#held.delete(ch);
    this.#heldCount -= list.length;
    return list;
  }
}
