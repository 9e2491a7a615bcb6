/**
 * What `sealed_payloads.ts` and its consumer process (`_sealed_consumer.ts`)
 * share: the topics' sealing policy and the main thread's CPU clock.
 *
 * @module
 */
import type { SealingPolicy } from "../core/security/sealed_transport.ts";

/** `sealed.>` sealed to node `b` alone (one recipient, as a work queue is). */
export const SEALED_POLICY: SealingPolicy = {
  topics: [{ pattern: "sealed.>", recipients: ["node:b"] }],
};

/** CPU ms of this process's main thread (utime + stime, 10 ms ticks). */
export function mainThreadCpuMs(): number {
  const stat = Deno.readTextFileSync(`/proc/self/task/${Deno.pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}
