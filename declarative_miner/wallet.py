"""Loading the miner's hotkey from a bittensor wallet directory, with errors an operator can act on."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import bittensor as bt

from .errors import ConfigError, ConfigProblem


def btcli(command: str, *, name: str, hotkey: str, path: str, **options: object) -> str:
    """A btcli command line (the btcli of bittensor 11, installed with it) for this wallet, printable
    for an operator to run as it is."""
    flags = "".join(f" --{key.replace('_', '-')} {shlex.quote(str(value))}" for key, value in options.items())
    return (f"btcli {command}{flags} --wallet {shlex.quote(name)} --wallet-hotkey {shlex.quote(hotkey)} "
            f"--wallet-path {shlex.quote(str(Path(path).expanduser()))}")


def open_wallet(name: str, hotkey: str, path: str) -> bt.Wallet:
    """A `bt.Wallet` whose hotkey is loaded now, or a `ConfigError` naming the file and the fix.

    An encrypted hotkey is unlocked only from its `BT_PW_*` environment variable, or by a
    password prompt when stdin is a terminal; a service never hangs on a prompt.
    """
    wallet = bt.Wallet(name, hotkey, path=str(Path(path).expanduser()))
    keyfile = wallet.hotkey_file
    if not keyfile.exists_on_device():
        raise ConfigError([ConfigProblem(
            "wallet.hotkey",
            f"no hotkey file at {keyfile.path} (got wallet.name={name}, wallet.hotkey={hotkey}, "
            f"wallet.path={path}; expected an existing hotkey: create it with "
            f"`{btcli('wallet new-hotkey', name=name, hotkey=hotkey, path=path)}`)",
        )])
    encrypted = keyfile.is_encrypted()
    if encrypted and keyfile.env_var_name() not in os.environ and not sys.stdin.isatty():
        raise ConfigError([ConfigProblem(
            "wallet.hotkey",
            f"the hotkey at {keyfile.path} is encrypted and this run cannot prompt for its password "
            f"(got no {keyfile.env_var_name()} in the environment; expected the line "
            f"`{password_command(name, hotkey, path)}` prints, in the service's environment, or an "
            "unencrypted hotkey: miners sign every response, so hotkeys are usually kept unencrypted "
            "and the coldkey encrypted)",
        )])
    try:
        wallet.hotkey  # noqa: B018 - loads and caches the keypair
    except Exception as exc:  # bittensor_core raises its own KeyfileError types
        expected = (f"{keyfile.env_var_name()} as `{password_command(name, hotkey, path)}` prints it"
                    if encrypted and keyfile.env_var_name() in os.environ else "a bittensor keyfile")
        raise ConfigError([ConfigProblem(
            "wallet.hotkey", f"cannot read {keyfile.path} (got {exc}; expected {expected})"
        )]) from None
    return wallet


def password_command(name: str, hotkey: str, path: str) -> str:
    """The command that prints an encrypted hotkey's password variable (declarative_miner.password)."""
    return (f"python -m declarative_miner.password --wallet {shlex.quote(name)} --wallet-hotkey "
            f"{shlex.quote(hotkey)} --wallet-path {shlex.quote(str(Path(path).expanduser()))}")


def create_wallet(name: str, hotkey: str, path: str) -> bt.Wallet:
    """Create a password-less wallet (coldkey and hotkey) unless its files already exist."""
    wallet = bt.Wallet(name, hotkey, path=str(Path(path).expanduser()))
    if not wallet.coldkeypub_file.exists_on_device():
        wallet.create_new_coldkey(use_password=False, overwrite=False, suppress=True)
    if not wallet.hotkey_file.exists_on_device():
        wallet.create_new_hotkey(use_password=False, overwrite=False, suppress=True)
    return wallet
