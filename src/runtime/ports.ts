/**
 * Port assignment for supervised processes: bind HOST:0, read the port the OS chose, close the
 * listener and hand the number to the child (in its environment).
 *
 * The race: between our close and the child's bind another process may take the port. The OS
 * hands out ephemeral ports round-robin, so this is rare on a development machine; when it
 * happens the child fails to bind (EADDRINUSE), exits, and the supervisor restarts it with a new
 * port after its backoff. Within one Skein process the race is closed: a port stays leased (and
 * is never handed out twice) until the replica that got it has exited.
 */
import { createServer } from 'node:net';

export interface PortLease {
  readonly port: number;
  /** Gives the port back (after the process that used it has exited). Idempotent. */
  release(): void;
}

export type PortAllocator = (host: string) => Promise<PortLease>;

const leased = new Set<number>();

/** Ports leased in this process and not yet released (for tests and diagnostics). */
export function leasedPorts(): readonly number[] {
  return [...leased];
}

function bindEphemeral(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ host, port: 0, exclusive: true }, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error(`could not read the port bound on ${host}`))));
    });
  });
}

/** A free port on `host` (default 127.0.0.1), not leased to anyone else in this process. */
export const assignPort: PortAllocator = async (host = '127.0.0.1') => {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await bindEphemeral(host);
    if (leased.has(port)) continue;
    leased.add(port);
    let released = false;
    return {
      port,
      release() {
        if (released) return;
        released = true;
        leased.delete(port);
      },
    };
  }
  throw new Error(`no free port on ${host} after 20 attempts`);
};
