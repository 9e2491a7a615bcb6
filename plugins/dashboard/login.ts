/**
 * Sign-in for people through any OpenID Connect provider (discovery from its
 * issuer URL) or a plain OAuth 2 provider such as GitHub (endpoints given,
 * the user from a JSON user endpoint): the authorization code flow with
 * PKCE (S256), a `state` bound to this login attempt and, for OpenID
 * Connect, a `nonce` bound into the ID token; built on `oauth4webapi` (the
 * library `@deno/kv-oauth` is built on; that package is JSR-only).
 *
 * Each attempt is a KV record under its `state` holding the PKCE verifier,
 * the nonce and the hash of a browser binding (a random value the page
 * keeps in a short-lived cookie): the callback takes the record with a
 * check-and-delete, so a `state` works once and a replayed callback is
 * refused, and only the browser that started the attempt can finish it (a
 * callback URL handed to someone else, "login CSRF", is refused). Claims
 * map to a Plexus role by config ({@linkcode roleFor}).
 *
 * @module
 */
import { createHash } from "node:crypto";
import * as oauth from "oauth4webapi";
import { z } from "zod";
import type { ScopedKv } from "../../core/plugin.ts";
import { isRole, type Role, ROLES } from "../../core/security/roles.ts";

/** The `provider` part of the dashboard's config. */
export const providerSchema = z.strictObject({
  /** `oidc`: discovery from `issuer`, ID token checked; `oauth2`: endpoints given, the user read from `userEndpoint` (GitHub style). */
  type: z.enum(["oidc", "oauth2"]).default("oidc"),
  /** The provider's issuer URL (OpenID Connect discovery: `{issuer}/.well-known/openid-configuration`). */
  issuer: z.url({ protocol: /^https?$/ }),
  /** This node's client id at the provider. */
  clientId: z.string().min(1).max(512),
  /** The client secret (confidential client); none makes a public client (PKCE only). Prefer the env var named by `clientSecretEnv`. */
  clientSecret: z.string().min(1).max(4096).optional(),
  /** Environment variable holding the client secret. */
  clientSecretEnv: z.string().regex(/^[A-Z_][A-Z0-9_]*$/).optional(),
  /** Scopes asked for. */
  scopes: z.array(z.string().min(1).max(128)).max(32).default([
    "openid",
    "profile",
    "email",
  ]),
  /** The redirect URI registered at the provider (default: this node's `/ui/auth/callback` on the URL the browser used). */
  redirectUri: z.url({ protocol: /^https?$/ }).optional(),
  /** `oauth2` only: the authorization endpoint. */
  authorizationEndpoint: z.url({ protocol: /^https?$/ }).optional(),
  /** `oauth2` only: the token endpoint. */
  tokenEndpoint: z.url({ protocol: /^https?$/ }).optional(),
  /** `oauth2` only: a JSON endpoint describing the user (GitHub: `https://api.github.com/user`). */
  userEndpoint: z.url({ protocol: /^https?$/ }).optional(),
  /** The claim (dot path) naming the person: `sub` for OpenID Connect, e.g. `login` or `id` for GitHub. */
  subjectClaim: z.string().min(1).max(128).default("sub"),
  /** The claim (dot path) whose value(s) map to roles, e.g. `groups`. */
  roleClaim: z.string().min(1).max(128).default("groups"),
  /** Claim value → Plexus role; the highest role any value maps to wins. */
  roles: z.record(z.string().min(1).max(256), z.enum(ROLES)).default({}),
  /** The role of a person none of whose values is mapped; none refuses them (403). */
  defaultRole: z.enum(ROLES).optional(),
  /** Allow `http:` provider URLs (a provider on loopback in tests or a closed network); off by default. */
  allowHttp: z.boolean().default(false),
  /** How long a login attempt (the way to the provider and back) may take. */
  attemptTtlMs: z.number().int().min(10_000).max(3_600_000).default(600_000),
});

/** The provider config, defaults filled in. */
export type ProviderConfig = z.output<typeof providerSchema>;

/** A refused login: `status` for the answer, `message` for the person. */
export class LoginError extends Error {
  override name = "LoginError";
  /** The HTTP status to answer with. */
  readonly status: 400 | 401 | 403 | 502;
  constructor(
    status: 400 | 401 | 403 | 502,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.status = status;
  }
}

/** The person a finished login proved. */
export interface LoginResult {
  /** Provider-qualified: `oidc:{sub}` or `oauth2:{subject claim}`. */
  sub: string;
  role: Role;
  name?: string;
  /** Where to send the browser afterwards (a path on this node). */
  returnTo: string;
}

interface Attempt {
  verifier: string;
  /** SHA-256 (base64url) of the browser binding. */
  binding: string;
  nonce?: string;
  redirectUri: string;
  returnTo: string;
  expiresAt: number;
}

/** The value at dot path `path` of `claims`. */
function claimAt(claims: Record<string, unknown>, path: string): unknown {
  let v: unknown = claims;
  for (const part of path.split(".")) {
    if (v === null || typeof v !== "object" || !Object.hasOwn(v, part)) {
      return undefined;
    }
    v = (v as Record<string, unknown>)[part];
  }
  return v;
}

/**
 * The Plexus role of a person with `claims`: the highest role that any
 * value of `roleClaim` maps to in `roles` (a string or a list of strings),
 * else `defaultRole`, else null (refused).
 *
 * @example Usage
 * ```ts
 * import { roleFor } from "./login.ts";
 * import assert from "node:assert/strict";
 * const cfg = { roleClaim: "groups", roles: { ops: "operator", root: "admin" } } as const;
 * assert.equal(roleFor({ groups: ["dev", "ops"] }, cfg), "operator");
 * assert.equal(roleFor({ groups: ["ops", "root"] }, cfg), "admin");
 * assert.equal(roleFor({ groups: "dev" }, cfg), null);
 * assert.equal(roleFor({}, { ...cfg, defaultRole: "viewer" }), "viewer");
 * ```
 */
export function roleFor(
  claims: Record<string, unknown>,
  config: Pick<ProviderConfig, "roleClaim" | "defaultRole"> & {
    roles: Readonly<Record<string, Role>>;
  },
): Role | null {
  const raw = claimAt(claims, config.roleClaim);
  const values = Array.isArray(raw) ? raw : raw === undefined ? [] : [raw];
  let best: Role | null = null;
  for (const v of values) {
    if (typeof v !== "string" && typeof v !== "number") continue;
    const key = String(v);
    const role = Object.hasOwn(config.roles, key)
      ? config.roles[key]
      : undefined;
    // ROLES lists the most privileged first.
    if (
      isRole(role) &&
      (best === null || ROLES.indexOf(role) < ROLES.indexOf(best))
    ) {
      best = role;
    }
  }
  return best ?? config.defaultRole ?? null;
}

/** Sign-in through one provider. */
export interface Login {
  /**
   * A new attempt: the provider's authorization URL (the browser is
   * redirected there) and the browser binding to keep in a cookie until the
   * callback.
   */
  start(
    requestUrl: URL,
    returnTo?: string,
  ): Promise<{ url: URL; binding: string }>;
  /**
   * Finishes the attempt the callback URL names, for the browser holding
   * `binding`; throws {@linkcode LoginError}.
   */
  finish(callbackUrl: URL, binding: string | undefined): Promise<LoginResult>;
}

/** Options for {@linkcode createLogin}. */
export interface LoginOptions {
  /** Where attempts are kept (the plugin's KV). */
  kv: ScopedKv;
  /** The env lookup for `clientSecretEnv`. @default {Deno.env.get} */
  env?: (name: string) => string | undefined;
}

const sha256 = (s: string) =>
  createHash("sha256").update(s).digest("base64url");

const RETURN_TO_RE = /^\/ui\/[A-Za-z0-9/_.-]*$/;

/**
 * Sign-in through the provider `config` describes. Discovery runs on first
 * use and is retried on the next attempt if it failed.
 *
 * @example Usage
 * ```ts ignore
 * const login = createLogin(providerSchema.parse({ issuer, clientId: "plexus" }), { kv: ctx.kv });
 * return Response.redirect(await login.start(new URL(req.url)));
 * ```
 */
export function createLogin(
  config: ProviderConfig,
  options: LoginOptions,
): Login {
  const env = options.env ?? ((n: string) => Deno.env.get(n));
  const secret = config.clientSecret ??
    (config.clientSecretEnv ? env(config.clientSecretEnv) : undefined);
  const client: oauth.Client = { client_id: config.clientId };
  const clientAuth = secret ? oauth.ClientSecretPost(secret) : oauth.None();
  const http = config.allowHttp ? { [oauth.allowInsecureRequests]: true } : {};
  const issuer = new URL(config.issuer);
  let server: Promise<oauth.AuthorizationServer> | undefined;
  const authorizationServer = () => {
    server ??= (async () => {
      if (config.type === "oauth2") {
        if (!config.authorizationEndpoint || !config.tokenEndpoint) {
          throw new LoginError(
            502,
            "provider type 'oauth2' needs authorizationEndpoint and tokenEndpoint",
          );
        }
        return {
          issuer: config.issuer,
          authorization_endpoint: config.authorizationEndpoint,
          token_endpoint: config.tokenEndpoint,
        };
      }
      return await oauth.processDiscoveryResponse(
        issuer,
        await oauth.discoveryRequest(issuer, http),
      );
    })().catch((err) => {
      server = undefined;
      throw err instanceof LoginError ? err : new LoginError(
        502,
        `cannot read the provider's discovery document at ${config.issuer}: ${
          (err as Error).message
        }`,
        { cause: err },
      );
    });
    return server;
  };
  const attemptKey = (state: string) => ["login-attempt", state];

  return {
    async start(requestUrl, returnTo) {
      const as = await authorizationServer();
      const verifier = oauth.generateRandomCodeVerifier();
      const state = oauth.generateRandomState();
      const nonce = config.type === "oidc"
        ? oauth.generateRandomNonce()
        : undefined;
      const redirectUri = config.redirectUri ??
        new URL("/ui/auth/callback", requestUrl.origin).href;
      const binding = oauth.generateRandomState();
      const attempt: Attempt = {
        verifier,
        binding: sha256(binding),
        ...(nonce ? { nonce } : {}),
        redirectUri,
        returnTo: returnTo && RETURN_TO_RE.test(returnTo) ? returnTo : "/ui/",
        expiresAt: Date.now() + config.attemptTtlMs,
      };
      await options.kv.set(attemptKey(state), attempt, {
        expireIn: config.attemptTtlMs,
      });
      const url = new URL(as.authorization_endpoint!);
      url.searchParams.set("client_id", config.clientId);
      url.searchParams.set("redirect_uri", redirectUri);
      url.searchParams.set("response_type", "code");
      url.searchParams.set("scope", config.scopes.join(" "));
      url.searchParams.set(
        "code_challenge",
        await oauth.calculatePKCECodeChallenge(verifier),
      );
      url.searchParams.set("code_challenge_method", "S256");
      url.searchParams.set("state", state);
      if (nonce) url.searchParams.set("nonce", nonce);
      return { url, binding };
    },

    async finish(callbackUrl, binding) {
      const as = await authorizationServer();
      const state = callbackUrl.searchParams.get("state");
      if (!state || state.length > 256) {
        throw new LoginError(400, "the callback has no state");
      }
      // Taken once: a check-and-delete, so a replayed callback finds nothing.
      const entry = await options.kv.get<Attempt>(attemptKey(state));
      const taken = entry.value &&
        (await options.kv.atomic().check(entry).delete(attemptKey(state))
          .commit()).ok;
      if (!entry.value || !taken || entry.value.expiresAt < Date.now()) {
        throw new LoginError(
          400,
          "unknown, used or expired login attempt (state); start again",
        );
      }
      const attempt = entry.value;
      if (binding === undefined || sha256(binding) !== attempt.binding) {
        throw new LoginError(
          400,
          "this login was started in another browser, or its cookie is gone; start again",
        );
      }
      let params: URLSearchParams;
      try {
        params = oauth.validateAuthResponse(as, client, callbackUrl, state);
      } catch (err) {
        throw new LoginError(
          err instanceof oauth.AuthorizationResponseError ? 401 : 400,
          `the provider refused the login: ${(err as Error).message}`,
          { cause: err },
        );
      }
      let tokens: oauth.TokenEndpointResponse;
      try {
        const response = await oauth.authorizationCodeGrantRequest(
          as,
          client,
          clientAuth,
          params,
          attempt.redirectUri,
          attempt.verifier,
          http,
        );
        tokens = await oauth.processAuthorizationCodeResponse(
          as,
          client,
          response,
          config.type === "oidc"
            ? { expectedNonce: attempt.nonce, requireIdToken: true }
            : {},
        );
      } catch (err) {
        throw new LoginError(
          401,
          `the code exchange failed: ${(err as Error).message}`,
          { cause: err },
        );
      }
      let claims: Record<string, unknown>;
      if (config.type === "oidc") {
        claims = { ...oauth.getValidatedIdTokenClaims(tokens)! };
      } else {
        if (!config.userEndpoint) {
          throw new LoginError(
            502,
            "provider type 'oauth2' needs userEndpoint",
          );
        }
        const res = await oauth.protectedResourceRequest(
          tokens.access_token,
          "GET",
          new URL(config.userEndpoint),
          new Headers({ accept: "application/json" }),
          null,
          http,
        );
        if (!res.ok) {
          throw new LoginError(
            502,
            `the user endpoint answered ${res.status}`,
          );
        }
        claims = await res.json();
      }
      const subject = claimAt(claims, config.subjectClaim);
      if (typeof subject !== "string" && typeof subject !== "number") {
        throw new LoginError(
          502,
          `the provider's claims have no '${config.subjectClaim}'`,
        );
      }
      const sub = `${config.type}:${subject}`;
      const role = roleFor(claims, config);
      if (!role) {
        throw new LoginError(
          403,
          `'${sub}' has no Plexus role: none of its '${config.roleClaim}' values is mapped and there is no defaultRole`,
        );
      }
      const name = claims.name ?? claims.email ?? claims.login;
      return {
        sub,
        role,
        ...(typeof name === "string" ? { name } : {}),
        returnTo: attempt.returnTo,
      };
    },
  };
}
