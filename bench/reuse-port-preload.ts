/**
 * Loaded with `node --import` by bench/reuse-port.ts: every `listen({ ... })` of the process gets
 * `reusePort: true` (SO_REUSEPORT, Node 22.12+/24 on Linux), so several unmodified `skein proxy`
 * processes can listen on one port and the kernel spreads connections among them. For measuring
 * only: the proxy itself does not set the option.
 */
import net from 'node:net';

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (this: net.Server, ...args: unknown[]) {
  const first = args[0];
  if (first !== null && typeof first === 'object' && !Array.isArray(first)) args[0] = { ...(first as net.ListenOptions), reusePort: true };
  return (listen as (...a: unknown[]) => net.Server).apply(this, args);
} as typeof net.Server.prototype.listen;
