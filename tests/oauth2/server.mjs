// The OAuth 2.0 authorization server of sealpost's integration test
// (tests/integration/test_oauth2_server.c): oauth2-mock-server, installed by
// tests/oauth2/install into a directory of the build, made strict enough to
// be worth testing against. Out of the box it hands a token to any client;
// here the token endpoint answers 401 invalid_client unless the client
// authenticates (HTTP Basic or client_id/client_secret in the body) as the
// one client it knows, and tokens live only a few seconds so that a test can
// watch them expire.
//
//   node server.mjs INSTALL_DIR PORT TTL_SECONDS
//
// Listens on 127.0.0.1 only. The client's id and secret come from the
// environment (SP_OAUTH2_CLIENT_ID, SP_OAUTH2_CLIENT_SECRET), not the command
// line, where any local user could read them. Prints "listening" once ready;
// stops on SIGTERM.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { timingSafeEqual, createHash } from 'node:crypto';

const [dir, portText, ttlText] = process.argv.slice(2);
const port = Number.parseInt(portText ?? '', 10);
const ttl = Number.parseInt(ttlText ?? '', 10);
const wantId = process.env.SP_OAUTH2_CLIENT_ID ?? '';
const wantSecret = process.env.SP_OAUTH2_CLIENT_SECRET ?? '';
if (!dir || !(port > 0 && port < 65536) || !(ttl > 0) || !wantId || !wantSecret) {
  console.error('usage: SP_OAUTH2_CLIENT_ID=.. SP_OAUTH2_CLIENT_SECRET=.. node server.mjs INSTALL_DIR PORT TTL_SECONDS');
  process.exit(2);
}

const require = createRequire(join(dir, 'package.json'));
const { OAuth2Server, Events } = await import(pathToFileURL(require.resolve('oauth2-mock-server')).href);

// Compares digests so that neither the length nor the bytes leak through time.
const same = (a, b) =>
  timingSafeEqual(createHash('sha256').update(String(a)).digest(), createHash('sha256').update(String(b)).digest());

// RFC 6749 section 2.3.1: Basic credentials are form-urlencoded before base64.
function formDecode(s) {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return null;
  }
}

function clientOf(req) {
  const auth = req.headers.authorization ?? '';
  const m = /^Basic\s+([A-Za-z0-9+/=]+)$/i.exec(auth);
  if (m) {
    const text = Buffer.from(m[1], 'base64').toString('utf8');
    const colon = text.indexOf(':');
    if (colon < 0) return null;
    return { id: formDecode(text.slice(0, colon)), secret: formDecode(text.slice(colon + 1)), how: 'basic' };
  }
  if (auth !== '') return null;
  const body = req.body ?? {};
  return { id: body.client_id, secret: body.client_secret, how: 'body' };
}

const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');

server.service.on(Events.BeforeTokenSigning, (token) => {
  const now = Math.floor(Date.now() / 1000);
  token.payload.iat = now;
  token.payload.exp = now + ttl;
});

server.service.on(Events.BeforeResponse, (response, req) => {
  const client = clientOf(req);
  const ok =
    client !== null &&
    typeof client.id === 'string' &&
    typeof client.secret === 'string' &&
    same(client.id, wantId) &&
    same(client.secret, wantSecret);
  if (!ok) {
    response.statusCode = 401;
    response.body = { error: 'invalid_client' };
    return;
  }
  response.body.expires_in = ttl;
});

await server.start(port, '127.0.0.1');
console.log('listening');

const stop = async () => {
  await server.stop();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
