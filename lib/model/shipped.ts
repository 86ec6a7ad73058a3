/**
 * Where the files the package ships with its code are, wherever it is installed: its root (this file is
 * dist/lib/model/shipped.js), the real example models (models/README.md) and a few photos to send as camera frames.
 * Free of imports beyond Node's, so that a command that only needs a path loads no engine.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
/** `--model mnist` and `--model aircraft` (lib/model/zoo.ts SHIPPED_MODELS) are folders here */
export const SHIPPED_MODELS_DIR = join(PACKAGE_ROOT, 'models');
/** three photos for `defer sensor --images` */
export const SHIPPED_IMAGES_DIR = join(SHIPPED_MODELS_DIR, 'images');
