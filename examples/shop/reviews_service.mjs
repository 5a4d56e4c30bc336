// reviews of the Skein demo shop: a gRPC service (Node, @grpc/grpc-js, reviews.proto) that the
// frontend calls through the mesh. `shop.Reviews/ListReviews { product_id }` answers the
// product's reviews and their average; NOT_FOUND for a product the shop does not sell; INTERNAL
// for a product listed in REVIEWS_FAIL_PRODUCTS (a broken review store, on purpose: the
// frontend's fallback, and the failure the mesh counts by its grpc-status).
//
// Env: PORT (required), SKEIN_INSTANCE_ID (default "local"), REVIEWS_FAIL_PRODUCTS (product ids,
// comma-separated; default none).
//
//   PORT=8083 node reviews_service.mjs &
//   (any gRPC client of reviews.proto at 127.0.0.1:8083; through the mesh, see README.md)
import { grpc, shopPackage } from './reviews-proto.mjs';

const INSTANCE_ID = process.env.SKEIN_INSTANCE_ID || 'local';

function fail(message) {
  process.stderr.write(`reviews: ${message}\n`);
  process.exit(2);
}

const port = Number(process.env.PORT);
if (!/^\d+$/.test(process.env.PORT ?? '') || port < 1 || port > 65535) fail(`PORT must be set to a port number (1-65535), not ${JSON.stringify(process.env.PORT ?? '')}`);

const failText = process.env.REVIEWS_FAIL_PRODUCTS ?? '';
if (!/^(\d{1,9}(,\d{1,9})*)?$/.test(failText.replace(/\s+/g, ''))) fail(`REVIEWS_FAIL_PRODUCTS must be product ids separated by commas (e.g. "4" or "2,4"), not ${JSON.stringify(failText)}`);
const FAIL_PRODUCTS = new Set(failText.replace(/\s+/g, '').split(',').filter((s) => s !== '').map(Number));

/** The reviews of the products of product_service.py (ids 1-5). */
const REVIEWS = {
  1: [
    { author: 'Grace', stars: 5, text: 'Soft, and no pilling after a winter.' },
    { author: 'Edsger', stars: 4, text: 'Lovely colour; the skein was a little short.' },
  ],
  2: [
    { author: 'Ada', stars: 5, text: 'Light and warm in the hand.' },
    { author: 'Alan', stars: 4, text: 'Good needles, the tips could be sharper.' },
  ],
  3: [{ author: 'Barbara', stars: 5, text: 'Twenty markers, twenty colours.' }],
  4: [{ author: 'Margaret', stars: 3, text: 'Clear patterns, few sizes.' }],
  5: [],
};

const average = (reviews) => (reviews.length === 0 ? 0 : Math.round((reviews.reduce((n, r) => n + r.stars, 0) / reviews.length) * 10) / 10);

/** A gRPC error: grpc-js sends `code` and `details` as grpc-status and grpc-message (in the trailers). */
const grpcError = (code, details) => Object.assign(new Error(details), { code, details });

const server = new grpc.Server();
server.addService(shopPackage().Reviews.service, {
  ListReviews(call, callback) {
    const started = process.hrtime.bigint();
    const id = call.request.product_id;
    const done = (err, reply) => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const rid = call.metadata.get('x-request-id')[0];
      process.stderr.write(`ListReviews product_id=${id} ${err ? grpc.status[err.code] : 'OK'} ${ms.toFixed(1)}ms${rid === undefined ? '' : ` x-request-id=${rid}`}\n`);
      callback(err, reply);
    };
    if (!Number.isInteger(id) || id < 1) return done(grpcError(grpc.status.INVALID_ARGUMENT, `product_id must be a positive integer, not ${id}`));
    if (FAIL_PRODUCTS.has(id)) return done(grpcError(grpc.status.INTERNAL, `the review store of product ${id} cannot be read (REVIEWS_FAIL_PRODUCTS)`));
    const reviews = REVIEWS[id];
    if (reviews === undefined) return done(grpcError(grpc.status.NOT_FOUND, `no product ${id}`));
    done(null, { reviews, average_stars: average(reviews), served_by: INSTANCE_ID });
  },
});

server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) fail(`cannot listen on 127.0.0.1:${port}: ${err.message}`);
  process.stderr.write(`reviews (${INSTANCE_ID}) listening on 127.0.0.1:${port} (gRPC, h2c)\n`);
});

// SIGTERM (and Ctrl-C): calls in flight finish, then exit; a stuck one cannot hold us up.
function stop() {
  server.tryShutdown(() => {
    process.stderr.write(`reviews (${INSTANCE_ID}) stopped\n`);
    process.exit(0);
  });
  setTimeout(() => process.exit(0), 5000).unref();
}
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
