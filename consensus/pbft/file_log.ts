/**
 * Durable PBFT records in one append-only file: each
 * {@linkcode PbftReady}'s records become one record on disk, written and
 * `fdatasync`ed before the Ready's messages leave (persist before send).
 * A Ready with `compact` replaces the file through a synced temporary file
 * and a rename, so the file is never half old, half new.
 *
 * The file is a {@linkcode RecordFile} (`consensus/_shared/`, the one Raft's
 * log uses): `u32 length | u32 crc32 | JSON array of records` (big endian).
 * On open the file is read up to the first short or corrupt record and cut
 * there: a crash in the middle of a write loses only that record, whose
 * messages never left the replica.
 *
 * @module
 */
import { RecordFile, type RecordFileOptions } from "../_shared/record_file.ts";
import type { PbftReady, PbftRecord } from "./types.ts";

/** Options of {@linkcode PbftFileLog.open}. */
export type PbftFileLogOptions = RecordFileOptions;

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
  readonly #file: RecordFile;
  readonly #records: PbftRecord[];
  /** Bytes cut off the end at open (a torn last write). */
  readonly truncatedBytes: number;

  private constructor(file: RecordFile) {
    this.#file = file;
    this.path = file.path;
    this.truncatedBytes = file.truncatedBytes;
    this.#records = (file.bodies as PbftRecord[][]).flat();
  }

  /** Opens (or creates) `dir/pbft.log`, reading back what it holds. */
  static async open(
    dir: string,
    options: PbftFileLogOptions = {},
  ): Promise<PbftFileLog> {
    return new PbftFileLog(await RecordFile.open(dir, "pbft.log", options));
  }

  /** Writes since open (each one write + one fdatasync). */
  get writes(): number {
    return this.#file.writes;
  }

  /** Bytes in the file. */
  get size(): number {
    return this.#file.size;
  }

  /** The records read at open, in order (what `createPbft({storage})` takes). */
  records(): PbftRecord[] {
    return this.#records;
  }

  /** Persists a Ready's records: a rewrite if it compacts, else one append; nothing if empty. */
  async save(rd: Pick<PbftReady, "compact" | "persist">): Promise<void> {
    if (rd.compact) {
      return await this.#file.rewrite([...rd.compact, ...rd.persist]);
    }
    if (rd.persist.length === 0) return;
    await this.#file.append(rd.persist);
  }

  /** Closes the file. */
  close(): void {
    this.#file.close();
  }
}
