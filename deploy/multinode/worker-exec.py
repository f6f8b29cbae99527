"""Runs this node's engine command as a group worker, in place of `aim-engine serve`.

    python3 deploy/multinode/worker-exec.py MODEL [aim-engine plan flags...]

`aim-engine serve` does not supervise a group worker yet (it refuses with exit 64); until it
does, a worker runs the command `aim-engine plan` makes for it (the group facts come from the
same variables: AIM_NNODES / AIM_NODE_RANK / AIM_LEADER_ADDR, or LeaderWorkerSet's), with the
plan's environment, as this process (exec): when the engine dies, the container ends, and
LeaderWorkerSet's RecreateGroupOnPodRestart recreates the whole group.
"""

import json
import os
import subprocess
import sys


def main():
    plan = subprocess.run(
        ["aim-engine", "plan", *sys.argv[1:], "--format", "json"],
        check=True,
        stdout=subprocess.PIPE,
    )
    command = json.loads(plan.stdout)["command"]
    argv = command["argv"]
    env = dict(os.environ, **command["env"])
    print("worker-exec:", " ".join(argv), file=sys.stderr, flush=True)
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main()
