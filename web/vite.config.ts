// Builds web/ into web/dist (committed; src/webui embeds it into the binaries).
// `npm run dev` serves the UI with hot reload and forwards the API to a running
// tandem-server: TANDEM_SERVER=http://127.0.0.1:8765 by default.
import { defineConfig } from 'vite';

const backend = process.env.TANDEM_SERVER ?? 'http://127.0.0.1:8765';

export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    target: 'es2022',
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
  server: {
    proxy: {
      '/ws': { target: backend, ws: true },
      '/v1': backend,
      '/health': backend,
    },
  },
});
