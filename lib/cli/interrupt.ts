// Stopping a training command from outside: Ctrl-C (SIGINT) and SIGTERM (docker stop, systemd,
// kill) both finish the current step, save a checkpoint and end the command with exit code 130;
// a second signal quits at once.
import { EXIT } from "./common.js";

export interface StopSignals {
  /** Aborted at the first SIGINT or SIGTERM. */
  readonly signal: AbortSignal;
  /** Removes the handlers (the default behaviour of the signals returns). */
  dispose(): void;
}

export function stopOnSignals(): StopSignals {
  const controller = new AbortController();
  const handler = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      if (process.stdout.isTTY) process.stdout.write("\x1b[?25h\n"); // the progress bar hid the cursor
      process.exit(EXIT.interrupted);
    }
    const what = sig === "SIGINT" ? "interrupt" : `${sig} received`;
    console.error(`\n${what}: finishing the current step, then saving a checkpoint (Ctrl-C again to quit at once)`);
    controller.abort();
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
  return {
    signal: controller.signal,
    dispose: () => {
      process.off("SIGINT", handler);
      process.off("SIGTERM", handler);
    },
  };
}
