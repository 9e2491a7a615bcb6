/**
 * The transport's idempotent producer, replaced after a send that failed.
 *
 * KafkaJS numbers each partition's batches for the broker's duplicate check
 * and, when a produce request fails (a connection lost mid-request, as when
 * the broker is killed), takes the batch's numbers back. If the broker had
 * appended that batch anyway, the next batch (other messages) goes out with
 * the same numbers, and the broker, which rebuilt its producer state from
 * the log on restart, drops it as a duplicate and answers success: a
 * publish acknowledged and lost. A new producer gets a new producer id, so
 * nothing it sends is compared with what the old one sent.
 *
 * @module
 */

/** The part of a KafkaJS producer this uses. */
export interface ProducerLike<B> {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  sendBatch(batch: B): Promise<unknown>;
}

/** A producer that is replaced by a new one after a failed send. */
export interface RenewingProducer<B> {
  connect(): Promise<void>;
  /** Sends with the current producer; after a failure the next send uses a new one. */
  sendBatch(batch: B): Promise<void>;
  disconnect(): Promise<void>;
}

/**
 * Wraps producers made by `make`: after a `sendBatch` that rejects, the
 * producer is disconnected and the next send connects a new one first.
 * Sends must not overlap (the transport sends one batch at a time): a send
 * started while another replaces the producer would make a second one.
 *
 * @example Usage
 * ```ts ignore
 * const producer = renewingProducer(() => kafka.producer({ idempotent: true }));
 * await producer.connect();
 * await producer.sendBatch({ acks: -1, topicMessages });
 * ```
 */
export function renewingProducer<B>(
  make: () => ProducerLike<B>,
): RenewingProducer<B> {
  let current = make();
  let stale = false;
  return {
    connect: () => current.connect(),
    async sendBatch(batch: B) {
      if (stale) {
        await current.disconnect().catch(() => {});
        current = make();
        stale = false;
        try {
          await current.connect();
        } catch (err) {
          stale = true;
          throw err;
        }
      }
      try {
        await current.sendBatch(batch);
      } catch (err) {
        // The batch may have been appended: its sequence numbers are spent.
        stale = true;
        throw err;
      }
    },
    disconnect: () => current.disconnect(),
  };
}
