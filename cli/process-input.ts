/** What a command reads from its process: a line of stdin (a password), and the signal that stops it. */

export async function readStdinLine(): Promise<string> {
  let data = '';
  for await (const chunk of process.stdin) {
    data += chunk;
    if (data.includes('\n')) break;
  }
  return data.split(/\r?\n/)[0];
}

/** Resolve on SIGINT or SIGTERM (or when stdin closes, for child processes). */
export function waitForSignal(withStdin = false): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
    if (withStdin) {
      process.stdin.on('end', () => resolve());
      process.stdin.resume();
    }
  });
}
