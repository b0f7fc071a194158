"""The duties an agent runs: the master's scheduler, the worker, and the agent that holds them."""
