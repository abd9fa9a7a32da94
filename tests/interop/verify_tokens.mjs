// Verifies ridehail access tokens with jose (npm), as a resource server written in JavaScript would:
// discovery through the auth service's RFC 8414 metadata, keys from its jwks_uri, and the checks of
// RFC 9068 section 4 (typ at+jwt, issuer, audience, signature, expiry, the required claims).
//
// usage: node verify_tokens.mjs <metadata URL> <audience>   (tokens on stdin, one per line)
// prints one JSON line per token: {"ok": true, "header": {...}, "payload": {...}} or {"ok": false, "code": "..."}
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [metadataUrl, audience] = process.argv.slice(2);
if (!metadataUrl || !audience) {
  console.error('usage: node verify_tokens.mjs <metadata URL> <audience>');
  process.exit(2);
}
const response = await fetch(metadataUrl);
if (!response.ok) throw new Error(`metadata: HTTP ${response.status}`);
const metadata = await response.json();
const keys = createRemoteJWKSet(new URL(metadata.jwks_uri));

let input = '';
for await (const chunk of process.stdin) input += chunk;
for (const token of input.split('\n').map((line) => line.trim()).filter(Boolean)) {
  try {
    const { payload, protectedHeader } = await jwtVerify(token, keys, {
      issuer: metadata.issuer,
      audience,
      typ: 'at+jwt',
      algorithms: ['RS256', 'EdDSA'],
      requiredClaims: ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti'],
    });
    console.log(JSON.stringify({ ok: true, header: protectedHeader, payload }));
  } catch (error) {
    console.log(JSON.stringify({ ok: false, code: error.code || error.name, message: error.message }));
  }
}
