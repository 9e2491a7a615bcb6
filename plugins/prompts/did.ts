/**
 * DID resolution for SAGE verification: a small interface, one resolver per
 * DID method, and the built-in `did:key` resolver. A `did:web` or ledger
 * resolver is another plugin's {@linkcode DidResolver} added with
 * {@linkcode DidResolvers.register} (the prompt service's api,
 * `kernel.get("extension:prompts").resolvers`).
 *
 * The node trusts an agent's enrolled key: a DID an agent is enrolled under
 * must resolve to that same key, or every hop it answers fails verification.
 *
 * @example Usage
 * ```ts
 * import { createDidResolvers } from "./did.ts";
 * const resolvers = createDidResolvers();
 * const key = await resolvers.resolve("did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw");
 * key.length; // 32
 * ```
 *
 * @module
 */
import {
  ed25519DidKey,
  parseEd25519PublicKey,
} from "../../core/security/ed25519.ts";

/** Resolves DIDs of one method to their Ed25519 verification key. */
export interface DidResolver {
  /** The DID method, e.g. `key` for `did:key:…`, `web` for `did:web:…`. */
  readonly method: string;
  /** The raw 32-byte Ed25519 public key of `did`; throws when it cannot. */
  resolve(did: string): Promise<Uint8Array>;
}

/** Resolvers by method. */
export interface DidResolvers {
  /** Adds (or replaces) the resolver of a method; returns the function that removes it. */
  register(resolver: DidResolver): () => void;
  /** Whether a resolver for `did`'s method is registered. */
  supports(did: string): boolean;
  /** The key of `did`, by its method's resolver; throws for an unknown method. */
  resolve(did: string): Promise<Uint8Array>;
  /** The `did:key` of a raw Ed25519 public key. */
  didKey(publicKey: Uint8Array): string;
}

/**
 * The `did:key` resolver (Ed25519 keys only: multicodec 0xed01); the key is
 * in the DID itself.
 *
 * @example Usage
 * ```ts
 * import { didKeyResolver } from "./did.ts";
 * didKeyResolver.method; // "key"
 * ```
 */
export const didKeyResolver: DidResolver = {
  method: "key",
  resolve(did) {
    try {
      return Promise.resolve(parseEd25519PublicKey(did));
    } catch (err) {
      return Promise.reject(
        new Error(
          `cannot resolve '${did.slice(0, 80)}': ${(err as Error).message}`,
        ),
      );
    }
  },
};

const methodOf = (did: string) => /^did:([a-z0-9]+):/.exec(did)?.[1];

/**
 * Resolvers with `did:key` registered.
 *
 * @example Usage
 * ```ts
 * import { createDidResolvers } from "./did.ts";
 * const resolvers = createDidResolvers();
 * resolvers.supports("did:web:example.org"); // false
 * ```
 */
export function createDidResolvers(): DidResolvers {
  const byMethod = new Map<string, DidResolver>([["key", didKeyResolver]]);
  return {
    register(resolver) {
      byMethod.set(resolver.method, resolver);
      return () => {
        if (byMethod.get(resolver.method) === resolver) {
          byMethod.delete(resolver.method);
        }
      };
    },
    supports: (did) => byMethod.has(methodOf(did) ?? ""),
    resolve(did) {
      const resolver = byMethod.get(methodOf(did) ?? "");
      if (!resolver) {
        return Promise.reject(
          new Error(
            `no DID resolver for '${did.slice(0, 80)}' (methods: ${
              [...byMethod.keys()].join(", ")
            })`,
          ),
        );
      }
      return resolver.resolve(did);
    },
    didKey: ed25519DidKey,
  };
}
