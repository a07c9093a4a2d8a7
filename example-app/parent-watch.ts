// `npm run example` runs the primary under npm (exec'd, so npm is its parent). npm forwards
// SIGINT and SIGTERM to it but not SIGHUP: a SIGHUP sent to npm's pid kills npm alone (exit
// 129) and would leave the cluster running with nobody to stop it. A primary started by npm
// that sees its parent go away shuts down like on SIGTERM. (Started any other way, say with
// nohup, it is left alone: outliving its parent may be the point. npm sets npm_lifecycle_event
// for the script it runs, and every descendant inherits it: only `example` counts.)

const POLL_MILLIS = 500

/** Calls `onGone` once if `npm run example` started this process and its parent exits. Returns a stop function. */
export function watchNpmParent (onGone: (parentPid: number) => void): () => void {
  if (process.env.npm_lifecycle_event !== 'example') return () => {}
  const parent = process.ppid
  const timer = setInterval(() => {
    if (process.ppid === parent) return
    clearInterval(timer)
    onGone(parent)
  }, POLL_MILLIS).unref()
  return () => clearInterval(timer)
}
