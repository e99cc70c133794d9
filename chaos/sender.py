"""A client process that sends one request: with the ``after-submit`` crash point armed, it dies
between registering the request and publishing it (``python -m chaos.sender MSG1 MSG2 TASK_ID``)."""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    from chaos.app import persistent  # after the environment names the chaos servers

    msg1, msg2, task_id = json.loads(argv[0]), json.loads(argv[1]), argv[2]
    persistent.resolve.apply_async((msg1, msg2), task_id=task_id)
    print("sent without crashing: was CELERY_PERSISTENT_CRASH=after-submit set?", file=sys.stderr)
    return 3


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
