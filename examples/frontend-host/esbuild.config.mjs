// The same host built with esbuild alone: `node esbuild.config.mjs [--watch]`.
import * as esbuild from 'esbuild';

const options = {
  entryPoints: ['src/main.tsx'],
  bundle: true,
  splitting: true,
  format: 'esm',
  outdir: 'dist-esbuild',
  jsx: 'automatic',
  minify: true,
  define: { 'process.env.NODE_ENV': '"production"' },
  // Addon trees are reached through the src/addons/.store link: resolve their imports
  // (react, ...) from here, not from the store's real path outside the app.
  preserveSymlinks: true,
  logLevel: 'warning',
};

if (process.argv.includes('--watch')) {
  // esbuild watches the files it bundled: index.ts changes on every transaction that
  // changes an addon, and the new index imports the new trees.
  const context = await esbuild.context(options);
  await context.watch();
} else {
  await esbuild.build(options);
}
