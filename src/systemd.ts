// systemd's notify protocol (sd_notify(3)) for the units of deploy/systemd
// (Type=notify, WatchdogSec=): READY=1 once the role's work is under way
// (the backup's data path installed and replicating, the detector and the
// agent listening), WATCHDOG=1 every half of $WATCHDOG_USEC while the role
// makes progress — the backup's packet thread passing its loop, the others'
// event loop turning — so that a stuck engine is restarted by systemd
// (Restart=on-failure), STOPPING=1 as it stops. Without $NOTIFY_SOCKET
// (not run by systemd) it does nothing.
import { addon } from './addon.js';
import type { Logger } from './log.js';

export class SystemdNotifier {
  private timer: NodeJS.Timeout | undefined;
  private failed = false;

  constructor(private readonly log: Logger, private readonly env: NodeJS.ProcessEnv = process.env) {}

  get enabled(): boolean {
    return !!this.env.NOTIFY_SOCKET;
  }

  /**
   * READY=1 with a status line, and from then on WATCHDOG=1 while `progress()` says the role
   * moved since the last feed (when the unit has WatchdogSec=).
   */
  ready(status: string, progress: () => boolean): void {
    if (!this.enabled) return;
    this.send(`READY=1\nSTATUS=${status}\nMAINPID=${process.pid}`);
    const usec = Number(this.env.WATCHDOG_USEC);
    const forUs = !this.env.WATCHDOG_PID || Number(this.env.WATCHDOG_PID) === process.pid;
    if (!Number.isFinite(usec) || usec <= 0 || !forUs) return;
    this.timer = setInterval(() => {
      if (progress()) this.send('WATCHDOG=1');
      else this.log.warn('not feeding the systemd watchdog: no progress since the last feed (systemd restarts a unit that stays stuck)');
    }, Math.max(1, Math.floor(usec / 2000)));
    this.timer.unref();
  }

  stopping(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.enabled) this.send('STOPPING=1');
  }

  private send(text: string): void {
    const err = addon().sdNotify(text);
    if (err && !this.failed) {
      this.failed = true;
      this.log.warn('cannot notify systemd', { error: err });
    }
  }
}

/** A progress test for the watchdog: true when `count()` moved since the last call. */
export function advancing(count: () => number): () => boolean {
  let last = -1;
  return () => {
    const now = count();
    const moved = now !== last;
    last = now;
    return moved;
  };
}
