// The part of `centrifuge`'s API (npm, 5.8.0) that
// bench/peers/_centrifuge_clients.ts uses, which imports the package by a
// computed name (see there why).

/** What a subscription's `publication` handler receives. */
export interface PublicationContext {
  channel: string;
  data: unknown;
}

/** A channel subscription of one client. */
export interface Subscription {
  on(event: "publication", fn: (ctx: PublicationContext) => void): this;
  subscribe(): void;
  ready(timeoutMs?: number): Promise<void>;
}

/** What the `connecting` and `disconnected` events carry. */
export interface StateContext {
  code: number;
  reason: string;
}

/** One client connection. */
export class Centrifuge {
  on(
    event: "connecting" | "disconnected",
    fn: (ctx: StateContext) => void,
  ): this;
  constructor(endpoint: string, options?: { websocket?: unknown });
  newSubscription(channel: string): Subscription;
  connect(): void;
  disconnect(): void;
}
