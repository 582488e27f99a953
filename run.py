"""Entry point: `python run.py [model=...] [task=...] [method=...] [key=value ...]`, `-m` for sweeps."""

import sys

import hydra

from adapters.base import ConfigError
from runners.config import check_overrides, register_resolvers
from tasks.base import DataError

register_resolvers()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg) -> None:
    from runners.train import RunStopped, run, summary  # heavy imports after Hydra parsed the command line

    try:
        record = run(cfg)
    except (ConfigError, DataError, RunStopped) as e:
        sys.exit(f"error: {e}")
    if record.get("metrics"):
        print(summary(record))


if __name__ == "__main__":
    try:
        check_overrides(sys.argv[1:])
    except ConfigError as e:
        sys.exit(f"error: {e}")
    main()
