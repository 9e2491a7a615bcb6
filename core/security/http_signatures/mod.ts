/**
 * RFC 9421 HTTP Message Signatures with Ed25519 and HMAC-SHA256 (WebCrypto),
 * plus the verification policy Plexus applies: required components, maximum
 * age from `created`, `expires`, nonce replay protection in KV, `keyid`
 * resolved only to trusted keys, `alg` agreeing with the key, and
 * `Content-Digest` (RFC 9530) required whenever there is a body.
 *
 * Every verification failure carries the same public
 * {@linkcode VERIFICATION_FAILED_MESSAGE}, so callers cannot tell an unknown
 * key from a bad signature; the precise `reason` and `detail` are for logs.
 *
 * Deno's `Headers` joins repeated field lines with ", " before we see them,
 * so on a `Request`/`Response` `;bs` covers one joined instance; pass a
 * {@linkcode SignatureMessage} with separate instances when that matters.
 * Fetch exposes no trailers, so `;tr` needs a {@linkcode SignatureMessage}.
 *
 * One concern per file: `signature_base.ts` (components and the base
 * string), `keys.ts`, `sign.ts`, `verify.ts` and `nonce_store.ts` (the only
 * one touching Deno KV).
 *
 * @module
 */
export type { SignatureAlgorithm, SignatureKey } from "./keys.ts";
export {
  createSignatureBase,
  DEFAULT_REQUEST_COMPONENTS,
  DEFAULT_RESPONSE_COMPONENTS,
  type FieldLines,
  messageFromRequest,
  messageFromResponse,
  SignatureBaseError,
  type SignatureBaseOptions,
  type SignatureMessage,
  STRUCTURED_FIELD_TYPES,
} from "./signature_base.ts";
export {
  type SignedParts,
  signMessage,
  type SignOptions,
  signRequest,
  signResponse,
  type SignResponseOptions,
} from "./sign.ts";
export {
  type NonceStore,
  type ResolveKey,
  type VerifiableMessage,
  VERIFICATION_FAILED_MESSAGE,
  type VerificationBlock,
  verificationBlock,
  type VerificationFailure,
  type VerificationFailureReason,
  type VerificationPolicy,
  type VerificationResult,
  type VerificationSuccess,
  verifyMessage,
  type VerifyOptions,
  verifyRequest,
  verifyResponse,
  type VerifyResponseOptions,
} from "./verify.ts";
export { kvNonceStore, type KvNonceStoreOptions } from "./nonce_store.ts";
