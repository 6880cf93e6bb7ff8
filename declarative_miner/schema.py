"""The config tree's schema: one dataclass per group, registered in Hydra's ConfigStore.

The trailing comment of each field is its documentation: `Miner.add_args` turns it into the
`--group.key` help text, so keep it to one line that says the unit and the allowed values.
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


class Mode(Enum):
    serve = "serve"
    validate = "validate"
    eval = "eval"


class OnHit(Enum):
    reject = "reject"
    reuse = "reuse"


@dataclass
class NetworkConfig:
    name: str = "dev"  # dev (embedded, no chain), finney, test, local, or a ws:// endpoint
    netuid: Optional[int] = None  # the subnet this miner serves; required on every network but dev
    sync_interval: float = 4320.0  # seconds between metagraph refreshes (one tempo: 360 blocks x 12 s)
    max_snapshot_age: Optional[float] = None  # seconds; an older metagraph means 503 until a sync works (default 3 x sync_interval)
    publish_axon: bool = True  # live networks: put axon.external_ip/port on chain (ServeAxon) when it differs
    metagraph_file: str = "${home}/dev/metagraph.yaml"  # dev network only: neurons listed, uid = position

    @property
    def subnet(self) -> int:
        """`netuid`, which the dev network may leave out (its one subnet is 1)."""
        return self.netuid if self.netuid is not None else DEV_NETUID


@dataclass
class WalletConfig:
    name: str = "dev-miner"  # the coldkey directory under wallet.path
    hotkey: str = "default"  # the hotkey file under <name>/hotkeys/
    path: str = "${home}/dev/wallets"  # the wallets directory (bittensor's is ~/.bittensor/wallets)


@dataclass
class AxonConfig:
    ip: str = "127.0.0.1"  # address the HTTP server binds
    port: int = 8091  # port the HTTP server binds
    external_ip: Optional[str] = None  # address validators reach (published on chain); defaults to ip
    external_port: Optional[int] = None  # port validators reach; defaults to port
    max_concurrency: int = 8  # prompts running at once; more wait in the priority queue
    max_queue: int = 256  # requests waiting for a slot; beyond that new ones get 503
    request_timeout: float = 12.0  # seconds a request may queue and run before it gets 504
    max_body_bytes: int = 1048576  # larger bodies get 413 before they are read
    max_header_bytes: int = 32768  # request line plus headers; more gets 431 and the connection closes
    max_connections: int = 2048  # open connections at once (per worker); beyond that new requests get 503
    max_connections_per_ip: int = 128  # open connections from one address (a v10 Dendrite pools up to 100); more are closed at once
    max_unverified_per_ip: int = 16  # requests from one address whose signature is not yet verified; more get 429
    max_unverified_bytes: int = 16777216  # body bytes all not-yet-verified requests hold at once; past it the heaviest address's make room (503)
    max_refusals_per_ip: int = 100  # refused unverified requests per second from one address before it is shed (not read); 0 never sheds
    shed_for: float = 1.0  # seconds an address is first shed; doubling each time it floods again within a minute, at most 60
    trusted_proxies: List[str] = field(default_factory=list)  # reverse proxies (addresses or CIDR) whose X-Forwarded-For names the caller; none: every address is the TCP peer's
    ipv6_prefix: int = 64  # bits of an IPv6 caller's address its per-address bounds and shedding count by (one /64 is one host's)
    workers: int = 1  # server processes on this port (gunicorn supervises them); they share state.store, which must be disk or redis
    replay_store: Optional[str] = None  # deprecated: say state.store
    max_age: float = 10.0  # seconds a signed nonce stays fresh (btauth/1 and v10 alike)
    allowed_skew: float = 2.0  # seconds a caller's clock may run ahead of ours
    require_receiver: bool = True  # btauth/1 and Epistula: reject requests not bound to this miner's hotkey
    wire_formats: List[str] = field(default_factory=lambda: ["btauth", "v10", "epistula"])  # accepted: btauth (bittensor 11), v10 (bittensor 10 Dendrites), epistula (v2)
    sign_responses: bool = False  # sign each JSON reply with the miner's hotkey (btauth/1 headers over the body)


@dataclass
class StateConfig:
    store: str = "disk"  # where replay nonces, prompt claims and answers, and rate budgets live: disk (SQLite under home; the machine's processes share it), memory (one process, kept by nothing), redis://host:port/db (machines)


@dataclass
class MetricsConfig:
    host: str = "127.0.0.1"  # address of the Prometheus listener (never the public port); 0.0.0.0 for a Prometheus on another host
    port: Optional[int] = 9464  # its port (0: any free one, logged); null: no listener


@dataclass
class BlacklistConfig:
    # Ordered name -> options; the first rule that decides wins, and a request no rule denies
    # is allowed. A name is a built-in rule or any key with a `_target_` import path inside.
    rules: Dict[str, Any] = field(default_factory=dict)  # ordered rules, e.g. min_stake: {minimum: 1000}


@dataclass
class PriorityConfig:
    strategy: str = "stake"  # stake, constant, or an import path to f(request, metagraph) -> float
    params: Dict[str, Any] = field(default_factory=dict)  # keyword arguments of the strategy


@dataclass
class CacheConfig:
    ttl: float = 7200.0  # seconds a prompt counts as recent; 0 disables the cache
    directory: str = "${home}/cache"  # where the prompt cache lives with state.store=disk
    on_hit: OnHit = OnHit.reject  # reject: a recent prompt gets 409; reuse: answer the cached completion
    scope: str = "global"  # global: any caller's repeat is a duplicate; caller: only the same hotkey's
    namespace: Optional[str] = None  # who answers, part of every key; null: the prompt's _target_ and arguments
    max_entries: int = 1000000  # prompts remembered at once with state.store=memory
    clear: bool = False  # forget every stored prompt when the miner starts
    size_limit: int = 1073741824  # bytes on disk (state.store=disk) before the oldest answers go
    sync_writes: bool = False  # fsync every write: survives power loss, at twice the write cost


@dataclass
class SynapseConfig:
    # One request type, answered on POST /<its name> (see declarative_miner/synapses.py).
    inputs: Dict[str, Any] = field(default_factory=dict)  # field -> type (see declarative_miner/field_types.py) or {type, default}
    outputs: Dict[str, Any] = field(default_factory=dict)  # field -> type: what the answer fills
    hash_fields: List[str] = field(default_factory=list)  # inputs a v10 body hash covers (the synapse's required_hash_fields)
    stream: bool = False  # send the answer as it is produced (one str output)
    answer: Any = "prompt"  # prompt (the prompt group, through Miner.prompt) or {_target_: import path, ...arguments}
    request_class: Optional[str] = None  # import path of the dataclass a request is made as; null: one made from the fields
    arguments: Dict[str, str] = field(default_factory=dict)  # input field -> the answering callable's keyword argument (e.g. max_tokens: max_new_tokens)
    max_body_bytes: Optional[int] = None  # this type's bodies may be at most this (413 beyond, before they are read); null: axon.max_body_bytes


@dataclass
class EvalConfig:
    dataset: Optional[str] = None  # a .jsonl of {"messages", "roles"?, "reference"?} lines; null: the built-in set
    concurrency: int = 4  # requests in flight at once, as several validators would send them
    repeats: int = 1  # times the whole set is sent; repeats meet the cache (409 under reject, hits under reuse)
    limit: Optional[int] = None  # only the first N prompts of the dataset
    stream: bool = False  # send to /StreamPrompting and measure the first chunk too
    relevance: bool = True  # score completions against prompts with the local MiniLM model
    max_p95_ms: Optional[float] = None  # latency bound of the sweep objective: a slower job scores 0


@dataclass
class MinerConfig:
    home: str = f"${{oc.env:{HOME_VARIABLE},'{DEFAULT_HOME}'}}"  # state: dev wallets, cache, replay store
    mode: Mode = Mode.serve  # serve; validate (build every part, print a summary, exit); eval (score it offline)
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
    synapses: Dict[str, Any] = field(default_factory=dict)  # the request types answered, by name
    types: Dict[str, Any] = field(default_factory=dict)  # object types request fields name: Name -> {field: type}
    prompt: Dict[str, Any] = field(default_factory=dict)  # _target_ and keyword arguments of the prompt
    eval: EvalConfig = field(default_factory=EvalConfig)  # mode=eval only


def register() -> None:
    """Register the schema as `miner_schema`, the first entry of conf/miner.yaml's defaults."""
    ConfigStore.instance().store(name="miner_schema", node=MinerConfig)
