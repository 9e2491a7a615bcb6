/**
 * Durable PBFT records in one append-only file: each
 * {@linkcode PbftReady}'s records become one record on disk, written and
 * `fdatasync`ed before the Ready's messages leave (persist before send).
 * A Ready with `compact` replaces the file through a synced temporary file
 * and a rename, so the file is never half old, half new.
 *
 * The record format is Raft's ({@linkcode crc32} from
 * `consensus/raft/file_storage.ts`): `u32 length | u32 crc32 | JSON array
 * of records` (big endian). On open the file is read up to the first short
 * or corrupt record and cut there: a crash in the middle of a write loses
 * only that record, whose messages never left the replica.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { crc32 } from "../raft/file_storage.ts";
import type { PbftReady, PbftRecord } from "./types.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const HEADER = 8;
const MAX_RECORD = 1 << 30;

function encode(records: PbftRecord[]): Uint8Array {
  const payload = encoder.encode(JSON.stringify(records));
  const out = new Uint8Array(HEADER + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, payload.length);
  view.setUint32(4, crc32(payload));
  out.set(payload, HEADER);
  return out;
}

/** Options of {@linkcode PbftFileLog.open}. */
export interface PbftFileLogOptions {
  /** `fdatasync` after every write; off only in tests of the format. @default {true} */
  sync?: boolean;
}

/**
 * A replica's records on disk: one write and one `fdatasync` per Ready.
 *
 * @example Usage
 * ```ts
 * import { PbftFileLog } from "./file_log.ts";
 * const dir = await Deno.makeTempDir();
 * const log = await PbftFileLog.open(dir);
 * await log.save({ persist: [{ k: "view", view: 1, changing: true }] });
 * log.close();
 * const again = await PbftFileLog.open(dir);
 * again.records()[0].k; // "view"
 * again.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class PbftFileLog {
  /** Path of the log file. */
  readonly path: string;
  readonly #sync: boolean;
  #file: Deno.FsFile;
  #records: PbftRecord[];
  /** Bytes cut off the end at open (a torn last write). */
  readonly truncatedBytes: number;
  /** Writes since open (each one write + one fdatasync). */
  writes = 0;
  /** Bytes in the file. */
  size: number;

  private constructor(
    path: string,
    file: Deno.FsFile,
    records: PbftRecord[],
    size: number,
    truncated: number,
    sync: boolean,
  ) {
    this.path = path;
    this.#file = file;
    this.#records = records;
    this.size = size;
    this.truncatedBytes = truncated;
    this.#sync = sync;
  }

  /** Opens (or creates) `dir/pbft.log`, reading back what it holds. */
  static async open(
    dir: string,
    options: PbftFileLogOptions = {},
  ): Promise<PbftFileLog> {
    const sync = options.sync ?? true;
    await Deno.mkdir(dir, { recursive: true });
    const path = join(dir, "pbft.log");
    let bytes: Uint8Array;
    let created = false;
    try {
      bytes = await Deno.readFile(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      bytes = new Uint8Array();
      created = true;
    }
    const records: PbftRecord[] = [];
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    let off = 0;
    while (off + HEADER <= bytes.length) {
      const len = view.getUint32(off);
      if (len > MAX_RECORD || off + HEADER + len > bytes.length) break;
      const payload = bytes.subarray(off + HEADER, off + HEADER + len);
      if (crc32(payload) !== view.getUint32(off + 4)) break;
      try {
        records.push(...JSON.parse(decoder.decode(payload)));
      } catch {
        break;
      }
      off += HEADER + len;
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
    if (created && sync) await syncDir(dir);
    return new PbftFileLog(
      path,
      file,
      records,
      off,
      bytes.length - off,
      sync,
    );
  }

  /** The records read at open, in order (what `createPbft({storage})` takes). */
  records(): PbftRecord[] {
    return this.#records;
  }

  /** Persists a Ready's records: a rewrite if it compacts, else one append; nothing if empty. */
  async save(rd: Pick<PbftReady, "compact" | "persist">): Promise<void> {
    if (rd.compact) return await this.#rewrite([...rd.compact, ...rd.persist]);
    if (rd.persist.length === 0) return;
    const bytes = encode(rd.persist);
    let off = 0;
    while (off < bytes.length) {
      off += await this.#file.write(bytes.subarray(off));
    }
    if (this.#sync) await this.#file.syncData();
    this.size += bytes.length;
    this.writes++;
  }

  async #rewrite(records: PbftRecord[]): Promise<void> {
    const bytes = encode(records);
    const tmp = this.path + ".tmp";
    const f = await Deno.open(tmp, {
      write: true,
      create: true,
      truncate: true,
    });
    try {
      let off = 0;
      while (off < bytes.length) off += await f.write(bytes.subarray(off));
      if (this.#sync) await f.syncData();
    } finally {
      f.close();
    }
    this.#file.close();
    await Deno.rename(tmp, this.path);
    this.#file = await Deno.open(this.path, { read: true, write: true });
    if (this.#sync) await syncDir(dirname(this.path));
    await this.#file.seek(bytes.length, Deno.SeekMode.Start);
    this.size = bytes.length;
    this.writes++;
  }

  /** Closes the file. */
  close(): void {
    try {
      this.#file.close();
    } catch { /* already closed */ }
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
