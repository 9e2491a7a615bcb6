/**
 * The event store: an append-only log per stream in Deno KV, in commit
 * order across the cluster, with replay from an offset or a time and
 * retention by age and count.
 *
 * Order. Each append commit writes one batch per stream under
 * `["events", "log", stream, kv.commitVersionstamp()]`, so a stream's log
 * lists in commit order, which is the cluster-wide order (KV assigns
 * versionstamps in commit order, whichever process commits). Events of one
 * commit are numbered 0..n-1 in append order across its streams; an event's **offset** is
 * the commit's versionstamp (20 hex digits) followed by that number (4 hex
 * digits), so offsets of every stream compare as strings in one total
 * order. No counter is read or checked: concurrent appenders never conflict.
 *
 * Reading several streams at once merges them by offset. Each read first
 * reads `["events", "head"]` (set by every append commit) and returns only
 * offsets at or below its versionstamp, so a commit that lands during the
 * read (with a higher versionstamp) is never skipped past.
 *
 * Appends are batched: every `append` made in the same event-loop turn (up
 * to the size of a KV value per stream) goes into one commit.
 *
 * @module
 */
import {
  EVENT_HEAD_KEY,
  eventCountKey,
  eventLogKey,
  eventTimeKey,
} from "../../core/state/keys.ts";
import { PlexusError } from "../../core/plugin.ts";

/** An event as stored: a node event plus its stream and offset. */
export interface StoredEvent<D = unknown> {
  /** Total-order position: commit versionstamp + index in the commit. */
  offset: string;
  /** The log it is in (by default the type's first segment: `task`). */
  stream: string;
  id: string;
  type: string;
  version: number;
  at: number;
  node: string;
  seq: number;
  data: D;
}

/** An event to append: everything but the offset. */
export type NewEvent = Omit<StoredEvent, "offset">;

/** A batch as stored under one log key: its events with their index in the commit. */
type Batch = { i: number; e: NewEvent }[];

/** Largest event, as JSON bytes. */
export const MAX_EVENT_BYTES = 16 * 1024;
/** A stream's batch in one commit stays under this many JSON bytes (KV values hold 64 KiB). */
const BATCH_BYTES = 48 * 1024;
/** At most this many events per commit (the index has 4 hex digits). */
const COMMIT_EVENTS = 4096;
/** At most this many streams per commit (each writes 2 keys and a sum). */
const COMMIT_STREAMS = 64;
const U64 = 1n << 64n;
const STREAM_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const encoder = new TextEncoder();

/** An event the store refuses (too large, bad stream name). */
export class EventStoreError extends PlexusError {
  override name = "EventStoreError";
  /** `message` names the event and the limit. */
  constructor(message: string) {
    super("bad_event", message, { status: 400 });
  }
}

/** Where a read starts. */
export type ReadFrom =
  | { after: string }
  | { time: number };

/** Options for {@linkcode EventStore.read}. */
export interface ReadOptions {
  /** Streams to read. @default {every stream} */
  streams?: string[];
  /** Largest number of batches read per stream. @default {64} */
  pageBatches?: number;
}

/** A page of events in offset order. */
export interface ReadPage {
  events: StoredEvent[];
  /**
   * Where the next read continues (`{after: next}`): the last offset
   * covered, matching or not; equal to the start when nothing was new.
   */
  next: string;
}

/** What one retention pass removed. */
export interface TrimReport {
  batches: number;
  events: number;
}

/** Options for {@linkcode createEventStore}. */
export interface EventStoreOptions {
  /** Called after each append commit (wakes local subscribers). */
  onAppend?: () => void;
}

/** The store. */
export interface EventStore {
  /** Appends one event; resolves with its offset once committed. */
  append(event: NewEvent): Promise<string>;
  /** Reads events after `from` (an offset, or the first commit at/after a time). */
  read(from: ReadFrom, options?: ReadOptions): Promise<ReadPage>;
  /** The offset every event committed so far is at or below ("" for none). */
  head(): Promise<string>;
  /** The streams that hold (or held) events. */
  streams(): Promise<string[]>;
  /** Events held per stream. */
  counts(): Promise<Record<string, number>>;
  /** Removes whole batches older than `maxAgeMs` or beyond `maxCount` per stream. */
  trim(limits: { maxAgeMs?: number; maxCount?: number }): Promise<TrimReport>;
  /** Commits what is pending and stops batching. */
  close(): Promise<void>;
}

/** The offset of event `i` of the commit with versionstamp `vs`. */
export function eventOffset(vs: string, i: number): string {
  return vs + i.toString(16).padStart(4, "0");
}

/**
 * Creates the store over `kv`.
 *
 * @example Usage
 * ```ts
 * import { createEventStore } from "./store.ts";
 * import assert from "node:assert/strict";
 * const kv = await Deno.openKv(":memory:");
 * const store = createEventStore(kv);
 * const e = { stream: "task", id: "1", type: "task.started", version: 1, at: 0, node: "n1", seq: 1, data: {} };
 * const [a, b] = await Promise.all([store.append(e), store.append({ ...e, id: "2", seq: 2 })]);
 * assert.ok(a < b);
 * const page = await store.read({ after: a });
 * assert.deepEqual(page.events.map((x) => x.id), ["2"]);
 * await store.close();
 * kv.close();
 * ```
 */
export function createEventStore(
  kv: Deno.Kv,
  options: EventStoreOptions = {},
): EventStore {
  type Pending = {
    e: NewEvent;
    /** Index in its commit: append order, across streams. */
    i: number;
    bytes: number;
    resolve: (offset: string) => void;
    reject: (err: unknown) => void;
  };
  let pending: Pending[] = [];
  let flushing: Promise<void> | null = null;
  let scheduled = false;
  let closed = false;

  /** Takes what fits one commit off the front of `pending`. */
  const takeCommit = (): Map<string, Pending[]> => {
    const byStream = new Map<string, Pending[]>();
    const bytes = new Map<string, number>();
    let n = 0;
    let k = 0;
    for (; k < pending.length && n < COMMIT_EVENTS; k++) {
      const p = pending[k];
      const s = p.e.stream;
      const used = bytes.get(s) ?? 0;
      if (!byStream.has(s) && byStream.size >= COMMIT_STREAMS) break;
      if (used + p.bytes > BATCH_BYTES && used > 0) break;
      bytes.set(s, used + p.bytes);
      p.i = n;
      if (!byStream.has(s)) byStream.set(s, []);
      byStream.get(s)!.push(p);
      n++;
    }
    pending = pending.slice(k);
    return byStream;
  };

  const commitOne = async (byStream: Map<string, Pending[]>) => {
    const batches = new Map<string, Batch>();
    for (const [stream, ps] of byStream) {
      batches.set(stream, ps.map((p) => ({ i: p.i, e: p.e })));
    }
    const op = kv.atomic();
    const vs = kv.commitVersionstamp();
    for (const [stream, batch] of batches) {
      op.set(eventLogKey(stream, vs), batch);
      op.set(eventTimeKey(stream, batch[0].e.at, vs), batch.length);
      op.sum(eventCountKey(stream), BigInt(batch.length));
    }
    op.set(EVENT_HEAD_KEY, null);
    const res = await op.commit();
    if (!res.ok) throw new Error("event append commit was refused");
    for (const [stream, batch] of batches) {
      const ps = byStream.get(stream)!;
      batch.forEach((b, j) =>
        ps[j].resolve(eventOffset(res.versionstamp, b.i))
      );
    }
  };

  const flush = async () => {
    while (pending.length > 0) {
      const byStream = takeCommit();
      try {
        await commitOne(byStream);
      } catch (err) {
        for (const ps of byStream.values()) for (const p of ps) p.reject(err);
      }
      options.onAppend?.();
    }
  };

  const schedule = () => {
    if (scheduled || flushing) return;
    scheduled = true;
    // Everything appended in this turn goes into one commit.
    setTimeout(() => {
      scheduled = false;
      flushing = flush().finally(() => {
        flushing = null;
        if (pending.length > 0) schedule();
      });
    }, 0);
  };

  const streams = async (): Promise<string[]> => {
    const out: string[] = [];
    for await (const e of kv.list({ prefix: eventCountKey() })) {
      out.push(e.key[2] as string);
    }
    return out;
  };

  const head = async (): Promise<string> => {
    const h = await kv.get(EVENT_HEAD_KEY);
    return h.versionstamp ? eventOffset(h.versionstamp, 0xffff) : "";
  };

  /** The smallest versionstamp of a batch at or after `time` in any stream, as an "after" offset. */
  const afterTime = async (time: number, names: string[]): Promise<string> => {
    let best: string | null = null;
    for (const s of names) {
      for await (
        const e of kv.list({
          start: eventTimeKey(s, time),
          end: [...eventTimeKey(s), Infinity],
        }, { limit: 1 })
      ) {
        const vs = e.key[4] as string;
        if (best === null || vs < best) best = vs;
      }
    }
    // A bare versionstamp sorts before every offset of its commit.
    return best ?? await head();
  };

  return {
    append(e) {
      if (closed) {
        return Promise.reject(new Error("the event store is closed"));
      }
      if (!STREAM_RE.test(e.stream)) {
        return Promise.reject(
          new EventStoreError(
            `event '${e.type}': stream '${e.stream}' is not a lower-case name like 'task'`,
          ),
        );
      }
      const bytes = encoder.encode(JSON.stringify(e)).length;
      if (bytes > MAX_EVENT_BYTES) {
        return Promise.reject(
          new EventStoreError(
            `event '${e.type}' is ${bytes} bytes as JSON; the limit is ${MAX_EVENT_BYTES}`,
          ),
        );
      }
      return new Promise<string>((resolve, reject) => {
        pending.push({ e, i: 0, bytes, resolve, reject });
        schedule();
      });
    },

    async read(from, opts = {}) {
      // The head first: every commit at or below it is visible to the reads
      // below, including the stream list (a new stream's count key is
      // written by its first commit).
      const top = await head();
      const names = opts.streams ?? await streams();
      const after = "after" in from
        ? from.after
        : await afterTime(from.time, names);
      if (top === "" || after >= top) return { events: [], next: after };
      const limit = opts.pageBatches ?? 64;
      const topVs = top.slice(0, 20);
      // The start key is the commit of `after` itself: later events of it follow.
      const startVs = after.slice(0, 20);
      let bound = top;
      const pages = await Promise.all(names.map(async (s) => {
        const out: StoredEvent[] = [];
        let n = 0;
        let lastVs = "";
        for await (
          const entry of kv.list<Batch>({
            start: eventLogKey(s, startVs),
            // vs <= topVs: every versionstamp has 20 characters.
            end: eventLogKey(s, topVs + "\0"),
          }, { limit })
        ) {
          n++;
          lastVs = entry.key[3] as string;
          for (const { i, e } of entry.value) {
            const offset = eventOffset(lastVs, i);
            if (offset > after) out.push({ ...e, offset });
          }
        }
        // A stream cut short by the page limit bounds what is safe to merge.
        if (n === limit) {
          const b = eventOffset(lastVs, 0xffff);
          if (b < bound) bound = b;
        }
        return out;
      }));
      const events = pages.flat().filter((e) => e.offset <= bound).sort((
        a,
        b,
      ) => a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0);
      return { events, next: bound };
    },

    head,
    streams,

    async counts() {
      const out: Record<string, number> = {};
      for await (const e of kv.list<Deno.KvU64>({ prefix: eventCountKey() })) {
        out[e.key[2] as string] = Number(e.value.value);
      }
      return out;
    },

    async trim({ maxAgeMs, maxCount }) {
      const report: TrimReport = { batches: 0, events: 0 };
      const cutoff = maxAgeMs === undefined ? -Infinity : Date.now() - maxAgeMs;
      for (const s of await streams()) {
        const countEntry = await kv.get<Deno.KvU64>(eventCountKey(s));
        let count = Number(countEntry.value?.value ?? 0n);
        for (;;) {
          // 10 batches a commit: KV Connect may allow only 10 checks.
          const doomed: Deno.KvEntry<Batch>[] = [];
          for await (
            const e of kv.list<Batch>({ prefix: eventLogKey(s) }, { limit: 10 })
          ) {
            const old = e.value[0].e.at < cutoff;
            const over = maxCount !== undefined &&
              count - e.value.length >= maxCount;
            if (!old && !over) break;
            doomed.push(e);
            count -= e.value.length;
          }
          if (doomed.length === 0) break;
          const op = kv.atomic();
          let n = 0;
          for (const e of doomed) {
            op.check(e).delete(e.key).delete(
              eventTimeKey(s, e.value[0].e.at, e.key[3] as string),
            );
            n += e.value.length;
          }
          op.sum(eventCountKey(s), U64 - BigInt(n));
          const res = await op.commit();
          // Another node trimmed the same batches first: read again.
          if (!res.ok) {
            count = Number(
              (await kv.get<Deno.KvU64>(eventCountKey(s))).value?.value ?? 0n,
            );
            continue;
          }
          report.batches += doomed.length;
          report.events += n;
        }
      }
      return report;
    },

    async close() {
      closed = true;
      while (scheduled || flushing || pending.length > 0) {
        if (flushing) await flushing;
        else await new Promise((r) => setTimeout(r, 0));
      }
    },
  };
}
