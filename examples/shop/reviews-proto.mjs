// The Reviews service's definition (reviews.proto), for its server (reviews_service.mjs) and its
// client (frontend.mjs): @grpc/proto-loader reads the .proto at start-up, no generated code.
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

export { grpc };

/** The `shop` package of reviews.proto: `Reviews` is its service (a client class with `.service`). */
export function shopPackage() {
  const def = protoLoader.loadSync(fileURLToPath(new URL('reviews.proto', import.meta.url)), { keepCase: true, longs: Number, defaults: true });
  return grpc.loadPackageDefinition(def).shop;
}
