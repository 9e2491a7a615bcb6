/**
 * Durable Raft state in one append-only file: each {@linkcode Ready}'s
 * snapshot, entries and hard state become one record, written and then
 * `fdatasync`ed, so a driver that awaits {@linkcode FileStorage.save} before
 * sending keeps the persist-before-send contract.
 *
 * Record: `u32 length | u32 crc32 | JSON payload` (big endian). On open the
 * file is read up to the first short or corrupt record and cut there: a
 * crash in the middle of a write loses only that record, whose messages
 * never left the node. {@linkcode FileStorage.rewrite} replaces the file
 * with one record (snapshot + hard state + the entries after it) through a
 * temporary file and a rename.
 *
 * @module
 */
import { dirname, join } from "node:path";
import type {
  Entry,
  HardState,
  PersistedState,
  Ready,
  Snapshot,
} from "./types.ts";

/** One record's payload: what one save or rewrite persisted. */
interface RecordBody {
  /** Hard state. */
  h?: HardState;
  /** Entries; stored ones from `e[0].index` on are replaced. */
  e?: Entry[];
  /** Snapshot; replaces every stored entry. */
  s?: Snapshot;
  /** Bootstrap voters (written once, before the first election). */
  b?: string[];
}

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/**
 * CRC-32 (IEEE) of `bytes`.
 *
 * @example Usage
 * ```ts
 * import { crc32 } from "./file_storage.ts";
 * crc32(new TextEncoder().encode("123456789")).toString(16); // "cbf43926"
 * ```
 */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) {
    c = TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  }
  return (c ^ 0xffffffff) >>> 0;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const HEADER = 8;
/** A record longer than this is corruption, not data. */
const MAX_RECORD = 1 << 30;

function encodeRecord(body: RecordBody): Uint8Array {
  const payload = encoder.encode(JSON.stringify(body));
  const out = new Uint8Array(HEADER + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, payload.length);
  view.setUint32(4, crc32(payload));
  out.set(payload, HEADER);
  return out;
}

/** Options of {@linkcode FileStorage.open}. */
export interface FileStorageOptions {
  /** `fdatasync` after every write; off only in tests of the format. @default {true} */
  sync?: boolean;
}

/** What {@linkcode FileStorage.open} found in the file. */
export interface LoadReport {
  /** Records read. */
  records: number;
  /** Bytes cut off the end (a torn or corrupt last write). */
  truncatedBytes: number;
}

/**
 * A file-backed Raft log with group fsync: one write and one `fdatasync`
 * per {@linkcode Ready}, however many entries it holds.
 *
 * @example Usage
 * ```ts
 * import { createRaft } from "./core.ts";
 * import { FileStorage } from "./file_storage.ts";
 * const dir = await Deno.makeTempDir();
 * const storage = await FileStorage.open(dir);
 * const node = createRaft({ id: "1", peers: ["1"], random: () => 0 });
 * node.campaign();
 * const rd = node.ready();
 * await storage.save(rd); // durable before any message is sent
 * node.advance(rd);
 * storage.close();
 * const again = await FileStorage.open(dir);
 * again.state().hardState.term; // 1
 * again.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class FileStorage {
  /** Path of the log file. */
  readonly path: string;
  readonly #sync: boolean;
  #file: Deno.FsFile;
  #state: PersistedState;
  #voters?: string[];
  #size: number;
  /** What opening found. */
  readonly report: LoadReport;
  /** Records written since open (each one write + one fdatasync). */
  writes = 0;

  private constructor(
    path: string,
    file: Deno.FsFile,
    state: PersistedState,
    voters: string[] | undefined,
    size: number,
    report: LoadReport,
    sync: boolean,
  ) {
    this.path = path;
    this.#file = file;
    this.#state = state;
    this.#voters = voters;
    this.#size = size;
    this.report = report;
    this.#sync = sync;
  }

  /** Opens (or creates) `dir/raft.log`, reading back what it holds. */
  static async open(
    dir: string,
    options: FileStorageOptions = {},
  ): Promise<FileStorage> {
    await Deno.mkdir(dir, { recursive: true });
    const path = join(dir, "raft.log");
    let bytes: Uint8Array;
    let created = false;
    try {
      bytes = await Deno.readFile(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      bytes = new Uint8Array();
      created = true;
    }
    const state: PersistedState = {
      hardState: { term: 0, vote: "", commit: 0 },
      entries: [],
    };
    let voters: string[] | undefined;
    let off = 0;
    let records = 0;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    while (off + HEADER <= bytes.length) {
      const len = view.getUint32(off);
      if (len > MAX_RECORD || off + HEADER + len > bytes.length) break;
      const payload = bytes.subarray(off + HEADER, off + HEADER + len);
      if (crc32(payload) !== view.getUint32(off + 4)) break;
      let body: RecordBody;
      try {
        body = JSON.parse(decoder.decode(payload));
      } catch {
        break;
      }
      applyRecord(state, body);
      if (body.b) voters = body.b;
      off += HEADER + len;
      records++;
    }
    const file = await Deno.open(path, {
      read: true,
      write: true,
      create: true,
    });
    if (off < bytes.length) {
      await file.truncate(off);
      await file.syncData();
    }
    await file.seek(off, Deno.SeekMode.Start);
    // A new file's directory entry must be durable too, or a crash could
    // lose the whole log of a node that already voted.
    if (created && (options.sync ?? true)) await syncDir(dir);
    return new FileStorage(
      path,
      file,
      state,
      voters,
      off,
      { records, truncatedBytes: bytes.length - off },
      options.sync ?? true,
    );
  }

  /** Bytes in the file. */
  get size(): number {
    return this.#size;
  }

  /** The bootstrap voters recorded by {@linkcode saveVoters}, if any. */
  voters(): string[] | undefined {
    return this.#voters ? [...this.#voters] : undefined;
  }

  /** Durably records the voters a fresh cluster starts with. */
  async saveVoters(voters: string[]): Promise<void> {
    this.#voters = [...voters];
    await this.#append({ b: voters });
  }

  /**
   * Persists a Ready's snapshot, entries and hard state in one record and
   * one `fdatasync`; a Ready with none of them writes nothing.
   */
  async save(rd: Ready): Promise<void> {
    if (!rd.snapshot && rd.entries.length === 0 && !rd.hardState) return;
    const body: RecordBody = {};
    if (rd.snapshot) body.s = rd.snapshot;
    if (rd.entries.length > 0) body.e = rd.entries;
    if (rd.hardState) body.h = rd.hardState;
    applyRecord(this.#state, body);
    await this.#append(body);
  }

  /**
   * Replaces the file with one record holding `state` (plus the bootstrap
   * voters), via a synced temporary file and a rename: the log is never
   * half old, half new.
   */
  async rewrite(state: PersistedState): Promise<void> {
    const body: RecordBody = { h: state.hardState, e: state.entries };
    if (state.snapshot) body.s = state.snapshot;
    if (this.#voters) body.b = this.#voters;
    const bytes = encodeRecord(body);
    const tmp = this.path + ".tmp";
    const f = await Deno.open(tmp, {
      write: true,
      create: true,
      truncate: true,
    });
    try {
      await writeAll(f, bytes);
      if (this.#sync) await f.syncData();
    } finally {
      f.close();
    }
    this.#file.close();
    await Deno.rename(tmp, this.path);
    this.#file = await Deno.open(this.path, { read: true, write: true });
    if (this.#sync) await syncDir(dirname(this.path));
    await this.#file.seek(bytes.length, Deno.SeekMode.Start);
    this.#size = bytes.length;
    this.#state = state;
  }

  /** Folds the entries up to `snapshot.index` into the snapshot and rewrites the file. */
  async compact(snapshot: Snapshot): Promise<void> {
    const st = this.#state;
    await this.rewrite({
      hardState: { ...st.hardState },
      snapshot,
      entries: st.entries.filter((e) => e.index > snapshot.index),
    });
  }

  /** What a restarted node loads: hard state, snapshot, entries after it. */
  state(): PersistedState {
    return structuredClone(this.#state);
  }

  /** Closes the file. */
  close(): void {
    try {
      this.#file.close();
    } catch { /* already closed */ }
  }

  async #append(body: RecordBody): Promise<void> {
    const bytes = encodeRecord(body);
    await writeAll(this.#file, bytes);
    if (this.#sync) await this.#file.syncData();
    this.#size += bytes.length;
    this.writes++;
  }
}

async function syncDir(dir: string): Promise<void> {
  const d = await Deno.open(dir, { read: true });
  try {
    await d.sync();
  } finally {
    d.close();
  }
}

async function writeAll(f: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await f.write(bytes.subarray(off));
}

function applyRecord(state: PersistedState, body: RecordBody): void {
  if (body.s) {
    state.snapshot = body.s;
    state.entries = state.entries.filter((e) => e.index > body.s!.index);
  }
  if (body.e && body.e.length > 0) {
    const first = body.e[0].index;
    const ents = state.entries;
    // Entries are contiguous: cut at `first` by position, not by filtering.
    const base = ents.length > 0 ? ents[0].index : first;
    const keep = Math.max(0, Math.min(ents.length, first - base));
    ents.length = keep;
    for (const e of body.e) ents.push(e);
  }
  if (body.h) state.hardState = { ...body.h };
}
