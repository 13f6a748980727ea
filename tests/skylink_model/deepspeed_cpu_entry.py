"""Entry point for the DeepSpeed-on-CPU test: ``cli.main`` with DeepSpeed's shared-memory allreduce op left out.

DeepSpeed's CPU accelerator JIT-compiles ``deepspeed_shm_comm`` (a C++/OpenMP extension, minutes on 2 cores) the
first time a process group starts; without it collectives go through gloo. Everything else is the user's path.
"""

from __future__ import annotations

import importlib

import cli

# importlib, not `import deepspeed.comm.torch as m`: `deepspeed.comm` re-exports the name `torch` (the torch package).
importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None

if __name__ == "__main__":
    cli.main()
