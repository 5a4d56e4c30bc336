/**
 * `skein/sdk`: the proxyless Node client (docs/sdk.md). Node services join the mesh without a
 * proxy: an undici Dispatcher runs the proxy's engine in-process.
 */
export { createMeshDispatcher, MeshDispatcher, type MeshDispatcherOptions } from './dispatcher.js';
