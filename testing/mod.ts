/**
 * Everything a test author needs from Plexus, as `@plexus/host/testing`:
 *
 * - {@linkcode createTestKernel}: a real kernel on an in-memory Deno KV, to
 *   test a plugin without starting a process;
 * - {@linkcode conformance}: the transport conformance suite, for a
 *   transport written in or outside this repository, with
 *   {@linkcode memoryTransport}, its in-memory reference transport;
 * - {@linkcode SimKv} and {@linkcode Sim}: a deterministic simulation of
 *   Deno KV with virtual time and faults, for code built on the lease
 *   elector;
 * - `linearizability`: a linearizability checker for histories of
 *   concurrent clients ({@linkcode linearizability.check} against
 *   {@linkcode linearizability.kvModel}, histories recorded with
 *   {@linkcode linearizability.HistoryRecorder}), for a consensus plugin
 *   that offers replicated state.
 *
 * @example A plugin under test
 * ```ts
 * import { createTestKernel } from "./mod.ts";
 * import hello from "../plugins/examples/hello.ts";
 * await using t = await createTestKernel([hello]);
 * const res = await t.request("/plugins/hello/greet/ada");
 * (await res.json()).message; // "hello, ada"
 * ```
 *
 * @example A third-party transport runs the conformance suite
 * ```ts ignore
 * // my_transport_test.ts, run with `deno test -A`
 * import { conformance } from "@plexus/host/testing";
 * import { makeMyTransport } from "./my_transport.ts";
 *
 * conformance("my-transport", () => makeMyTransport());
 * ```
 *
 * @module
 */
export {
  createTestKernel,
  type TestKernel,
  type TestKernelOptions,
} from "../core/testing.ts";
// The contracts the helpers below take and return, for test authors who
// write a transport or drive the simulated KV (the same types as in
// `@plexus/host/plugin`).
export type {
  AttemptError,
  DeadLetter,
  Delivery,
  DeliveryHandler,
  PublishOptions,
  SubscribeOptions,
  Subscription,
  Transport,
  TransportCaps,
} from "../core/transport.ts";
export type { Clock } from "../core/clock.ts";
export type {
  ElectionAtomic,
  ElectionKv,
} from "../core/state/lease_elector.ts";
export * from "./conformance.ts";
export * from "./memory_transport.ts";
export * from "./sim_kv.ts";
export * as linearizability from "./linearizability.ts";
