"""Who sent a request: the wire formats (btauth/1, v10, Epistula v2), their replay and freshness
rules, and the miner's own signature on its replies. Verifies; never serves."""
