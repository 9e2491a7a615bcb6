/**
 * A real OpenID provider for the console tests: npm `oidc-provider` (a
 * certified OP) on loopback, with its in-memory adapter and one small
 * interaction of our own: a sign-in form asking only for the account name
 * (no password: the test is about the relying party), which also grants
 * the client's scopes, so there is no consent page.
 *
 * Accounts: any name; its `groups` claim is {@linkcode IdpOptions.groups}
 * of that name (none when unlisted).
 *
 * @module
 */
import {
  createServer,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";
import Provider from "oidc-provider";

/** Options for {@linkcode startIdp}. */
export interface IdpOptions {
  /**
   * Redirect URIs of the `plexus` client, or a function giving them when the
   * first request arrives (so the provider's port can be known before the
   * nodes whose callbacks it lists are started).
   */
  redirectUris: string[] | (() => string[]);
  /** `groups` claim per account name. */
  groups: Record<string, string[]>;
  /** The client secret. @default {"plexus-test-secret"} */
  clientSecret?: string;
}

/** A running provider. */
export interface Idp extends AsyncDisposable {
  /** Its issuer URL (`http://127.0.0.1:PORT`). */
  issuer: string;
  clientId: string;
  clientSecret: string;
  close(): Promise<void>;
}

const formPage = (uid: string) =>
  `<!doctype html><html><head><title>Test IdP sign-in</title></head><body>
<h1>Test IdP</h1>
<form method="post" action="/interaction/${uid}">
<label>Account <input id="account" name="login" autocomplete="off"></label>
<button id="idp-submit" type="submit">Sign in</button>
</form></body></html>`;

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Uint8Array[] = [];
  for await (const c of req) chunks.push(c as Uint8Array);
  return new URLSearchParams(new TextDecoder().decode(
    new Uint8Array(chunks.flatMap((c) => [...c])),
  ));
}

/**
 * Starts the provider on a free loopback port.
 *
 * @example Usage
 * ```ts ignore
 * await using idp = await startIdp({ redirectUris: ["http://localhost/ui/auth/callback"], groups: { alice: ["ops"] } });
 * ```
 */
export async function startIdp(options: IdpOptions): Promise<Idp> {
  const clientSecret = options.clientSecret ?? "plexus-test-secret";
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://127.0.0.1:${port}`;
  const build = () =>
    new Provider(issuer, {
      clients: [{
        client_id: "plexus",
        client_secret: clientSecret,
        redirect_uris: typeof options.redirectUris === "function"
          ? options.redirectUris()
          : options.redirectUris,
        grant_types: ["authorization_code"],
        response_types: ["code"],
        token_endpoint_auth_method: "client_secret_post",
      }],
      pkce: { required: () => true },
      scopes: ["openid", "profile", "email", "groups"],
      claims: {
        openid: ["sub"],
        profile: ["name"],
        email: ["email"],
        groups: ["groups"],
      },
      // Scope claims in the ID token itself (the RP reads roles from it).
      conformIdTokenClaims: false,
      features: { devInteractions: { enabled: false } },
      findAccount: (_ctx: unknown, id: string) => ({
        accountId: id,
        claims: () => ({
          sub: id,
          name: id,
          email: `${id}@example.test`,
          groups: options.groups[id] ?? [],
        }),
      }),
      interactions: {
        url: (_ctx: unknown, i: { uid: string }) => `/interaction/${i.uid}`,
      },
    });
  let provider: ReturnType<typeof build> | undefined;
  let callback: ReturnType<ReturnType<typeof build>["callback"]> | undefined;
  const interaction = async (req: IncomingMessage, res: ServerResponse) => {
    provider ??= build();
    const details = await provider.interactionDetails(req, res);
    if (req.method === "GET") {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(formPage(details.uid));
      return;
    }
    const login = (await readForm(req)).get("login") || "anonymous";
    const grant = new provider.Grant({
      accountId: login,
      clientId: details.params.client_id as string,
    });
    grant.addOIDCScope(String(details.params.scope));
    await provider.interactionFinished(req, res, {
      login: { accountId: login },
      consent: { grantId: await grant.save() },
    }, { mergeWithLastSubmission: false });
  };
  server.on("request", (req, res) => {
    if (req.url?.startsWith("/interaction/")) {
      interaction(req, res).catch((err) => {
        res.writeHead(500);
        res.end(String(err));
      });
    } else {
      provider ??= build();
      callback ??= provider.callback();
      callback(req, res);
    }
  });
  const close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return {
    issuer,
    clientId: "plexus",
    clientSecret,
    close,
    [Symbol.asyncDispose]: close,
  };
}
