"""How admitted work runs: the priority scheduler, the threads plain prompts run in, what a prompt
may return, and stopping work whose caller has left."""
