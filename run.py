"""Entry point: `python run.py [model=...] [task=...] [method=...] [key=value ...]`, `-m` for sweeps."""

import faulthandler
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from core import ConfigError
from runners.config import check_choices, check_overrides, precheck, register_resolvers
from tasks.base import DataError

register_resolvers()
if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>` prints every thread's stack: where a run hangs
    faulthandler.register(signal.SIGUSR1, all_threads=True)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg) -> None:
    from runners.train import RunStopped, run, summary  # heavy imports after Hydra parsed the command line

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        try:
            check_choices(cfg)
            record = run(cfg)
        except (ConfigError, DataError) as e:
            sys.exit(f"error: {e}")
        except RunStopped as e:
            print(f"error: {e}", file=sys.stderr)
            # Ctrl-C / SIGTERM stopped it (checkpoint + `interrupted` record): 130, as a shell reports
            # Ctrl-C and as sweeps exit, so scripts can tell "stopped, rerun to resume" from a failure
            sys.exit(130 if e.status == "interrupted" else 1)
        if record.get("metrics") and record.get("record_path"):  # the main process (of several)
            print(summary(record))
        return
    # a sweep job: record the outcome, never abort the sweep (runners/sweep.py prints the summary)
    from runners.sweep import end_packed_job, packed

    pack = packed(hydra_cfg.launcher)
    try:
        sweep_job(cfg, hydra_cfg, pack)
    finally:
        if pack:
            end_packed_job()  # an orphaned worker (its sweep process died) exits now


def sweep_job(cfg, hydra_cfg, pack: bool) -> None:
    from runners.sweep import release_memory, start_packed_job, stop_sweep, write_outcome
    from runners.train import RunStopped, run, summary

    outcome = {"overrides": list(hydra_cfg.overrides.task)}
    if pack and (reason := start_packed_job(hydra_cfg.sweep.dir, hydra_cfg.launcher.n_jobs)):
        outcome.update(status="interrupted", error=reason)
        write_outcome(hydra_cfg.runtime.output_dir, outcome)
        return
    try:
        check_choices(cfg)
        record = run(cfg, job=hydra_cfg.job.num)
        outcome.update(status=record["status"], run_id=record.get("run_id"))
        if record.get("metrics"):
            print(summary(record))
    except (ConfigError, DataError) as e:
        outcome.update(status="config_error", error=str(e))
        print(f"error: {e}", file=sys.stderr)
    except RunStopped as e:
        outcome.update(status=e.status, error=str(e))
        print(f"error: {e}", file=sys.stderr)
    except Exception as e:  # a bug in one job must not cost the sweep its other jobs
        import traceback

        traceback.print_exc()
        outcome.update(status="failed", error=f"{type(e).__name__}: {e}")
    finally:
        release_memory()  # the next job may run in this process (basic and pack launchers)
    write_outcome(hydra_cfg.runtime.output_dir, outcome)
    if outcome["status"] == "interrupted":  # Ctrl-C / SIGTERM stops the whole sweep; rerunning it resumes
        if pack:  # the other jobs stop too; the sweep process prints the summary and exits 130
            stop_sweep(hydra_cfg.sweep.dir)
        else:
            sys.exit(130)


if __name__ == "__main__":
    try:
        check_overrides(sys.argv[1:])
        precheck(sys.argv[1:])
    except ConfigError as e:
        sys.exit(f"error: {e}")
    from runners.plan import plan, strip_plan

    wanted, rest = strip_plan(sys.argv[1:])
    if wanted:  # list the sweep's runs and the compute they need; start nothing
        print(plan(rest))
        sys.exit(0)
    main()
