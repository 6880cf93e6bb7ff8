"""The config tree's schema: one dataclass per group, registered in Hydra's ConfigStore.

Each field is declared with `doc(default, help)`: the help is the field's metadata, which
`Miner.add_args` turns into the `--group.key` help text, so keep it to one line that says the unit
and the allowed values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore

from .files import DEFAULT_HOME, HOME_VARIABLE


WIRE_FORMATS = ("v10", "epistula", "btauth")  # every wire format, in the order a request's headers are matched
DEV_NETUID = 1  # the dev network's one subnet
MAX_SHED_FOR = 60.0  # seconds an address is shed at most (axon.shed_for doubles up to it)


def doc(default: Any, help: str) -> Any:
    """A dataclass field with its help in `metadata["help"]`; a callable default (a type, a
    dataclass, a lambda) makes each instance's own value."""
    if callable(default):
        return field(default_factory=default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


class Mode(Enum):
    serve = "serve"
    validate = "validate"
    eval = "eval"


class LogLevel(Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class OnHit(Enum):
    reject = "reject"
    reuse = "reuse"


@dataclass
class NetworkConfig:
    name: str = doc("dev", "dev (embedded, no chain), finney, test, local, or a ws:// endpoint")
    netuid: Optional[int] = doc(None, "the subnet this miner serves; required on every network but dev")
    sync_interval: float = doc(4320.0, "seconds between metagraph refreshes (one tempo: 360 blocks x 12 s)")
    max_snapshot_age: Optional[float] = doc(None, "seconds; an older metagraph means 503 until a sync works (default 3 x sync_interval)")
    publish_axon: bool = doc(True, "live networks: put axon.external_ip/port on chain (ServeAxon) when it differs")
    metagraph_file: str = doc("${home}/dev/metagraph.yaml", "dev network only: neurons listed, uid = position")

    @property
    def subnet(self) -> int:
        """`netuid`, which the dev network may leave out (its one subnet is 1)."""
        return self.netuid if self.netuid is not None else DEV_NETUID


@dataclass
class WalletConfig:
    name: str = doc("dev-miner", "the coldkey directory under wallet.path")
    hotkey: str = doc("default", "the hotkey file under <name>/hotkeys/")
    path: str = doc("${home}/dev/wallets", "the wallets directory (bittensor's is ~/.bittensor/wallets)")


@dataclass
class AxonConfig:
    ip: str = doc("127.0.0.1", "address the HTTP server binds")
    port: int = doc(8091, "port the HTTP server binds")
    external_ip: Optional[str] = doc(None, "address validators reach (published on chain); defaults to ip")
    external_port: Optional[int] = doc(None, "port validators reach; defaults to port")
    max_concurrency: int = doc(8, "prompts running at once; more wait in the priority queue")
    max_queue: int = doc(256, "requests waiting for a slot; beyond that new ones get 503")
    request_timeout: float = doc(12.0, "seconds a request may queue and run before it gets 504")
    max_body_bytes: int = doc(1048576, "larger bodies get 413 before they are read")
    max_header_bytes: int = doc(32768, "request line plus headers; more gets 431 and the connection closes")
    max_connections: int = doc(2048, "open connections at once (per worker); beyond that new requests get 503")
    max_connections_per_ip: int = doc(128, "open connections from one address (a v10 Dendrite pools up to 100); more are closed at once")
    max_unverified_per_ip: int = doc(16, "requests from one address whose signature is not yet verified; more get 429")
    max_unverified_bytes: int = doc(16777216, "body bytes all not-yet-verified requests hold at once; past it the heaviest address's make room (503)")
    max_refusals_per_ip: int = doc(100, "refused unverified requests per second from one address before it is shed (not read); 0 never sheds")
    shed_for: float = doc(1.0, "seconds an address is first shed; doubling each time it floods again within a minute, at most 60")
    trusted_proxies: List[str] = doc(list, "reverse proxies (addresses or CIDR) whose X-Forwarded-For names the caller; none: every address is the TCP peer's")
    ipv6_prefix: int = doc(64, "bits of an IPv6 caller's address its per-address bounds and shedding count by (one /64 is one host's)")
    workers: int = doc(1, "server processes on this port (gunicorn supervises them); they share state.store, which must be disk or redis")
    replay_store: Optional[str] = doc(None, "deprecated: say state.store")
    max_age: float = doc(10.0, "seconds a signed nonce stays fresh (btauth/1 and v10 alike)")
    allowed_skew: float = doc(2.0, "seconds a caller's clock may run ahead of ours")
    require_receiver: bool = doc(True, "btauth/1 and Epistula: reject requests not bound to this miner's hotkey")
    wire_formats: List[str] = doc(lambda: ["btauth", "v10", "epistula"], "accepted: btauth (bittensor 11), v10 (bittensor 10 Dendrites), epistula (v2)")
    sign_responses: bool = doc(False, "sign each JSON reply with the miner's hotkey (btauth/1 headers over the body)")

    @property
    def drain_bound(self) -> float:
        """Seconds a stop drains at most: the in-flight requests' deadline, and a second to answer."""
        return self.request_timeout + 1.0

    @property
    def stop_bound(self) -> float:
        """Seconds from SIGTERM to exit at most: the drain, and with workers their supervisor's second.
        A service manager must wait longer before it kills (deploy/ files; mode=validate says it)."""
        return self.drain_bound + (1.0 if self.workers > 1 else 0.0)


@dataclass
class StateConfig:
    store: str = doc("disk", "where replay nonces, prompt claims and answers, and rate budgets live: disk (SQLite under home; the machine's processes share it), memory (one process, kept by nothing), redis://host:port/db (machines)")


@dataclass
class MetricsConfig:
    host: str = doc("127.0.0.1", "address of the Prometheus listener (never the public port); 0.0.0.0 for a Prometheus on another host")
    port: Optional[int] = doc(9464, "its port (0: any free one, logged); null: no listener")


@dataclass
class BlacklistConfig:
    # Ordered name -> options; the first rule that decides wins, and a request no rule denies
    # is allowed. A name is a built-in rule or any key with a `_target_` import path inside.
    rules: Dict[str, Any] = doc(dict, "ordered rules, e.g. min_stake: {minimum: 1000}")


@dataclass
class PriorityConfig:
    strategy: str = doc("stake", "stake, constant, or an import path to f(request, metagraph) -> float")
    params: Dict[str, Any] = doc(dict, "keyword arguments of the strategy")


@dataclass
class CacheConfig:
    ttl: float = doc(7200.0, "seconds a prompt counts as recent; 0 disables the cache")
    directory: str = doc("${home}/cache", "where the prompt cache lives with state.store=disk")
    on_hit: OnHit = doc(OnHit.reject, "reject: a recent prompt gets 409; reuse: answer the cached completion")
    scope: str = doc("global", "global: any caller's repeat is a duplicate; caller: only the same hotkey's")
    namespace: Optional[str] = doc(None, "who answers, part of every key; null: the prompt's _target_ and arguments")
    max_entries: int = doc(1000000, "prompts remembered at once with state.store=memory")
    clear: bool = doc(False, "forget every stored prompt when the miner starts")
    size_limit: int = doc(1073741824, "bytes on disk (state.store=disk) before the oldest answers go")
    sync_writes: bool = doc(False, "fsync every write: survives power loss, at twice the write cost")


@dataclass
class SynapseConfig:
    # One request type, answered on POST /<its name> (see declarative_miner/synapses.py).
    inputs: Dict[str, Any] = doc(dict, "field -> type (see declarative_miner/field_types.py) or {type, default}")
    outputs: Dict[str, Any] = doc(dict, "field -> type: what the answer fills")
    hash_fields: List[str] = doc(list, "inputs a v10 body hash covers (the synapse's required_hash_fields)")
    stream: bool = doc(False, "send the answer as it is produced (one str output)")
    answer: Any = doc("prompt", "prompt (the prompt group, through Miner.prompt) or {_target_: import path, ...arguments}")
    request_class: Optional[str] = doc(None, "import path of the dataclass a request is made as; null: one made from the fields")
    arguments: Dict[str, str] = doc(dict, "input field -> the answering callable's keyword argument (e.g. max_tokens: max_new_tokens)")
    max_body_bytes: Optional[int] = doc(None, "this type's bodies may be at most this (413 beyond, before they are read); null: axon.max_body_bytes")


@dataclass
class EvalConfig:
    dataset: Optional[str] = doc(None, 'a .jsonl of {"messages", "roles"?, "reference"?} lines; null: the built-in set')
    concurrency: int = doc(4, "requests in flight at once, as several validators would send them")
    repeats: int = doc(1, "times the whole set is sent; repeats meet the cache (409 under reject, hits under reuse)")
    limit: Optional[int] = doc(None, "only the first N prompts of the dataset")
    stream: bool = doc(False, "send to /StreamPrompting and measure the first chunk too")
    relevance: bool = doc(True, "score completions against prompts with the local MiniLM model")
    max_p95_ms: Optional[float] = doc(None, "latency bound of the sweep objective: a slower job scores 0")


@dataclass
class MinerConfig:
    home: str = doc(f"${{oc.env:{HOME_VARIABLE},'{DEFAULT_HOME}'}}", "state: dev wallets, cache, replay store")
    log_level: LogLevel = doc(LogLevel.INFO, "INFO: a line per validator's request and a summary of refusals; DEBUG adds the libraries' own lines and progress bars")
    keep_runs: int = doc(20, "run folders kept under home/runs (each start and validate makes one; the oldest go); 0 keeps all")
    mode: Mode = doc(Mode.serve, "serve; validate (build every part, print a summary, exit); eval (score it offline)")
    network: NetworkConfig = field(default_factory=NetworkConfig)
    wallet: WalletConfig = field(default_factory=WalletConfig)
    axon: AxonConfig = field(default_factory=AxonConfig)
    state: StateConfig = field(default_factory=StateConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    blacklist: BlacklistConfig = field(default_factory=BlacklistConfig)
    priority: PriorityConfig = field(default_factory=PriorityConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    # Values are SynapseConfig's keys, checked by synapses.build_synapses: kept Any so that a type can
    # be added from the command line (+synapses.Dummy.inputs.x=int) as well as from YAML.
    synapses: Dict[str, Any] = doc(dict, "the request types answered, by name")
    types: Dict[str, Any] = doc(dict, "object types request fields name: Name -> {field: type}")
    prompt: Dict[str, Any] = doc(dict, "_target_ and keyword arguments of the prompt")
    eval: EvalConfig = doc(EvalConfig, "mode=eval only")


def register() -> None:
    """Register the schema as `miner_schema`, the first entry of conf/miner.yaml's defaults."""
    ConfigStore.instance().store(name="miner_schema", node=MinerConfig)
