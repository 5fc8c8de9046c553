// The example host's Vite config: what an app that imports atomicplug addons needs.
import react from '@vitejs/plugin-react';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin } from 'vite';

const addonIndex = fileURLToPath(new URL('./src/addons/index.ts', import.meta.url));

/**
 * While atomicplug's frontend gate runs a build as its check command, build the candidate
 * index it wrote ($ATOMICPLUG_FRONTEND_INDEX, src/addons/index.next.ts) in place of index.ts.
 */
function atomicplugCandidateIndex(): Plugin {
  const candidate = process.env.ATOMICPLUG_FRONTEND_INDEX;
  return {
    name: 'atomicplug-candidate-index',
    load(id) {
      return candidate && id === addonIndex ? readFileSync(candidate, 'utf-8') : null;
    },
  };
}

export default defineConfig({
  plugins: [react(), atomicplugCandidateIndex()],
  resolve: {
    // Addon trees are reached through the src/addons/.store link: resolve their imports
    // (react, ...) from here, not from the store's real path outside the app.
    preserveSymlinks: true,
  },
  server: {
    // The example plugins call the NextPanel backend (examples/nextpanel) under /api.
    proxy: { '/api': process.env.NEXTPANEL_URL ?? 'http://127.0.0.1:8000' },
    watch: {
      // Store trees never change (a new version is a new folder, and index.ts is rewritten
      // to import it), so there is nothing to watch under the link.
      ignored: ['**/src/addons/.store/**'],
    },
  },
});
