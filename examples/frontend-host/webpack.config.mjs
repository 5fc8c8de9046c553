// The same host built with webpack 5 (esbuild-loader for TypeScript): `npx webpack -c webpack.config.mjs`.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EsbuildPlugin } from 'esbuild-loader';

const here = path.dirname(fileURLToPath(import.meta.url));

export default {
  mode: 'production',
  entry: './src/main.tsx',
  output: { path: path.join(here, 'dist-webpack'), clean: true },
  resolve: {
    extensions: ['.tsx', '.ts', '.js'],
    // Addon trees are reached through the src/addons/.store link: resolve their imports
    // (react, ...) from here, not from the store's real path outside the app.
    symlinks: false,
  },
  module: {
    rules: [
      { test: /\.[jt]sx?$/, exclude: /node_modules/, loader: 'esbuild-loader', options: { target: 'es2022', jsx: 'automatic' } },
      { test: /\.css$/, type: 'css' },
    ],
  },
  experiments: { css: true },
  optimization: { minimizer: [new EsbuildPlugin({ target: 'es2022', css: true })] },
  // Store trees never change (a new version is a new folder, and index.ts is rewritten).
  watchOptions: { ignored: ['**/node_modules/**', '**/src/addons/.store/**'] },
  performance: { hints: false },
};
