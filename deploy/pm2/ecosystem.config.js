// MINER_ARGS="+recipe=openai network=finney ..." pm2 start deploy/pm2/ecosystem.config.js
// pm2 logs declarative-miner; pm2 save && pm2 startup to start it at boot.
// MINER_ARGS is the command line (any key of the config tree; words split at spaces, as systemd's
// $MINER_ARGS); it is read when pm2 loads this file, so `pm2 start/reload` it from a shell that has it.
// Secrets (OPENAI_API_KEY, a hotkey's password) are exported before `pm2 start`; pm2 keeps the
// environment it started an app with, and `pm2 save` writes it to ~/.pm2/dump.pm2: keep that file
// to yourself (mode 600).
const path = require("path");
const root = path.resolve(__dirname, "..", "..");
if (!(process.env.MINER_ARGS || "").trim()) {
  // Without it this would start the dev miner on 127.0.0.1: refuse rather than serve the wrong thing.
  throw new Error("MINER_ARGS is empty: export the miner's command line first, e.g. MINER_ARGS=\"+recipe=openai network=finney ...\"");
}

module.exports = {
  apps: [
    {
      name: "declarative-miner",
      script: path.join(root, ".venv", "bin", "python"),
      args: ["-m", "declarative_miner", ...(process.env.MINER_ARGS || "").split(/\s+/).filter(Boolean)],
      interpreter: "none",
      cwd: root,
      env: { PYTHONUNBUFFERED: "1" },
      // pm2 stops with SIGINT, which drains for up to axon.request_timeout + 1 s (13 s by default), as
      // SIGTERM does. pm2's default kill_timeout (1.6 s) would SIGKILL requests in flight; keep this
      // above the drain.
      kill_timeout: 30000,
      autorestart: true,
      // A bad config exits 2: restarting cannot fix it. A chain that does not answer at start exits 75: restarted.
      stop_exit_codes: [0, 2],
      max_restarts: 10,
      restart_delay: 5000,
    },
  ],
};
