"""What the prompt cache asks of a store: claim a prompt, settle it with its answer, or release it.

    claim(key) -> NEW (this process answers it), COMPUTING (another request is answering it) or
                  ANSWERED (answered within its ttl: `read(key)` gives the answer)
    settle(key, completion, ttl)   answered; the claim goes
    release(key)                   its answer failed: asking again is no duplicate
"""

NEW = "new"
COMPUTING = "computing"
ANSWERED = "answered"
