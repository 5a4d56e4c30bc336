/**
 * The Skein dashboard's build: `npx vite build dashboard` (from the repository root) writes
 * dashboard/dist/, every asset bundled and referenced relatively (base './'), so the control plane
 * can serve it under /dashboard/ and it works offline. `npx vite dashboard` runs a dev server that
 * forwards /v1 to the control plane named by SKEIN_CONTROL (default http://127.0.0.1:7400).
 */
import { defineConfig } from 'vite';

export default defineConfig({
  base: './',
  // JSX for Preact (Vite 8 transforms with oxc).
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    assetsInlineLimit: 8192,
    chunkSizeWarningLimit: 200,
    reportCompressedSize: false,
  },
  server: {
    proxy: { '/v1': { target: process.env['SKEIN_CONTROL'] ?? 'http://127.0.0.1:7400', changeOrigin: true } },
  },
});
