/** The proxy's side of mTLS: defined in src/identity/mtls/peer.ts (moved down so that the SDK holds and checks identities the same way). */
export * from '../../identity/mtls/peer.js';
