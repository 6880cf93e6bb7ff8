"""Print an encrypted hotkey's password as the environment variable bittensor unlocks it from.

    python -m declarative_miner.password --wallet W --wallet-hotkey H --wallet-path P

asks for the password (or reads one line from a pipe), checks that it opens the hotkey, and prints
`BT_PW_...=...`: a line for a systemd `EnvironmentFile=` (mode 0600) or pm2's `env`. bittensor keeps
the value encoded, not encrypted: the file is as secret as the password.
"""

from __future__ import annotations

import argparse
import ctypes
import getpass
import sys
from pathlib import Path

import bittensor as bt


def variable(keyfile, password: str) -> tuple[str, str]:
    """The variable bittensor reads `keyfile`'s password from, and its value for `password`."""
    name = keyfile.save_password_to_env(password)
    # bittensor sets it in the C environment, which Python's os.environ (read once at start) does not see.
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    return name, libc.getenv(name.encode()).decode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m declarative_miner.password", description=__doc__.split("\n")[0])
    parser.add_argument("--wallet", default="default", help="the wallet's name (wallet.name)")
    parser.add_argument("--wallet-hotkey", default="default", help="the hotkey's name (wallet.hotkey)")
    parser.add_argument("--wallet-path", default="~/.bittensor/wallets", help="where wallets are (wallet.path)")
    args = parser.parse_args(argv)
    keyfile = bt.Wallet(args.wallet, args.wallet_hotkey, path=str(Path(args.wallet_path).expanduser())).hotkey_file
    if not keyfile.exists_on_device():
        print(f"no hotkey file at {keyfile.path}", file=sys.stderr)
        return 2
    if not keyfile.is_encrypted():
        print(f"the hotkey at {keyfile.path} is not encrypted: the miner needs no password for it", file=sys.stderr)
        return 2
    password = getpass.getpass(f"Password of {keyfile.path}: ") if sys.stdin.isatty() else sys.stdin.readline()
    password = password.rstrip("\n")
    try:
        keyfile.get_keypair(password=password)
    except Exception as exc:  # bittensor_core's own error types
        print(f"that password does not open {keyfile.path} ({exc})", file=sys.stderr)
        return 1
    name, value = variable(keyfile, password)
    print(f"{name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
