// Prints a fresh P-256 key pair as one JSON line, for the harness to register a
// private_key_jwt client: { "private_pem": PKCS#8 PEM, "public_jwk": JWK }. Keys are made at
// test time so that none is kept in the repository.
import { generateKeyPairSync, randomUUID } from 'node:crypto';

const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const kid = randomUUID();
process.stdout.write(`${JSON.stringify({
  private_pem: privateKey.export({ format: 'pem', type: 'pkcs8' }),
  public_jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' },
})}\n`);
