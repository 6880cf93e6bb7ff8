"""Where the miner's view of the subnet comes from: the dev file, or a live chain."""
