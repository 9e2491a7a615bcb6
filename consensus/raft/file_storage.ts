/**
 * Durable Raft state in one append-only file: each {@linkcode Ready}'s
 * snapshot, entries and hard state become one record, written and then
 * `fdatasync`ed, so a driver that awaits {@linkcode FileStorage.save} before
 * sending keeps the persist-before-send contract.
 *
 * Record: `u32 length | u32 crc32 | JSON payload` (big endian), framed,
 * checked and synced by {@linkcode RecordFile} (`consensus/_shared/`, shared
 * with PBFT's log). On open the file is read up to the first short or
 * corrupt record and cut there: a crash in the middle of a write loses only
 * that record, whose messages never left the node.
 * {@linkcode FileStorage.rewrite} replaces the file with one record
 * (snapshot + hard state + the entries after it) through a temporary file
 * and a rename.
 *
 * @module
 */
import { crc32 as sharedCrc32, RecordFile } from "../_shared/record_file.ts";
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

/**
 * CRC-32 (IEEE) of `bytes` (the record checksum; it lives in
 * `consensus/_shared/record_file.ts`, shared with PBFT's log).
 *
 * @example Usage
 * ```ts
 * import { crc32 } from "./file_storage.ts";
 * crc32(new TextEncoder().encode("123456789")).toString(16); // "cbf43926"
 * ```
 */
export const crc32: (bytes: Uint8Array) => number = sharedCrc32;

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
  readonly #file: RecordFile;
  #state: PersistedState;
  #voters?: string[];
  #appends = 0;
  /** What opening found. */
  readonly report: LoadReport;

  private constructor(
    file: RecordFile,
    state: PersistedState,
    voters: string[] | undefined,
  ) {
    this.path = file.path;
    this.#file = file;
    this.#state = state;
    this.#voters = voters;
    this.report = {
      records: file.bodies.length,
      truncatedBytes: file.truncatedBytes,
    };
  }

  /** Opens (or creates) `dir/raft.log`, reading back what it holds. */
  static async open(
    dir: string,
    options: FileStorageOptions = {},
  ): Promise<FileStorage> {
    const file = await RecordFile.open(dir, "raft.log", options);
    const state: PersistedState = {
      hardState: { term: 0, vote: "", commit: 0 },
      entries: [],
    };
    let voters: string[] | undefined;
    for (const b of file.bodies) {
      const body = b as RecordBody;
      applyRecord(state, body);
      if (body.b) voters = body.b;
    }
    return new FileStorage(file, state, voters);
  }

  /** Bytes in the file. */
  get size(): number {
    return this.#file.size;
  }

  /** Records appended since open (each one write + one fdatasync). */
  get writes(): number {
    return this.#appends;
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
    await this.#file.rewrite(body);
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
    this.#file.close();
  }

  async #append(body: RecordBody): Promise<void> {
    await this.#file.append(body);
    this.#appends++;
  }
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
