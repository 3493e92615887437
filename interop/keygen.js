// Prints fresh key pairs as one JSON line, for the harness to register a private_key_jwt
// client: a P-256 key { "private_pem": PKCS#8 PEM, "public_jwk" } and an RSA 2048 key
// { "rsa_private_jwk", "rsa_public_jwk" }. Keys are made at test time so that none is kept in
// the repository.
import { generateKeyPairSync, randomUUID } from 'node:crypto';

const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const kid = randomUUID();
const rsaKid = randomUUID();
process.stdout.write(`${JSON.stringify({
  private_pem: privateKey.export({ format: 'pem', type: 'pkcs8' }),
  public_jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' },
  rsa_private_jwk: { ...rsa.privateKey.export({ format: 'jwk' }), kid: rsaKid, alg: 'RS256' },
  rsa_public_jwk: { ...rsa.publicKey.export({ format: 'jwk' }), kid: rsaKid, alg: 'RS256', use: 'sig' },
})}\n`);
