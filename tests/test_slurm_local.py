"""The sacct stand-in of scripts/slurm_local.sh answers submitit's query the way submitit parses it.

(The real cluster runs in CI through scripts/ci_slurm.sh: it needs root and the Debian packages.)
"""

from __future__ import annotations

import os
import subprocess

from submitit.slurm.slurm import SlurmInfoWatcher

from runners.config import ROOT

SCRIPT = ROOT / "scripts" / "slurm_local.sh"


def test_scripts_parse():
    for name in ("slurm_local.sh", "ci_slurm.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "scripts" / name)], check=True)


def test_sacct_standin_reads_scontrol_and_jobcomp(tmp_path):
    env = {**os.environ, "SLURM_LOCAL_DIR": str(tmp_path)}
    subprocess.run(["bash", str(SCRIPT), "sacct-standin"], check=True, env=env)
    fake = tmp_path / "fakebin"
    fake.mkdir()
    # the controller still knows array job 7 (task 0 done, task 1 running, tasks 2-3 pending)
    (fake / "scontrol").write_text(
        "#!/bin/sh\n"
        '[ "$4" = 7 ] || exit 0\n'
        "echo 'JobId=8 ArrayJobId=7 ArrayTaskId=0 JobState=COMPLETED NodeList=vm'\n"
        "echo 'JobId=9 ArrayJobId=7 ArrayTaskId=1 JobState=RUNNING NodeList=vm'\n"
        "echo 'JobId=7 ArrayJobId=7 ArrayTaskId=2-3%4 JobState=PENDING NodeList=(null)'\n"
    )
    (fake / "scontrol").chmod(0o755)
    (tmp_path / "etc").mkdir()
    (tmp_path / "log").mkdir()
    # job 3 (array 2, task 0) was forgotten by the controller: only the completion log has it
    (tmp_path / "log" / "jobcomp.txt").write_text(
        "JobId=3 UserId=root(0) Name=run JobState=FAILED NodeList=vm ArrayJobId=2 ArrayTaskId=0 ExitCode=1:0\n"
        "JobId=5 UserId=root(0) Name=run JobState=COMPLETED NodeList=vm ExitCode=0:0\n"
    )
    env = {**env, "PATH": f"{fake}:{os.environ['PATH']}", "SLURM_CONF": str(tmp_path / "etc" / "slurm.conf")}
    cmd = [str(tmp_path / "bin" / "sacct"), "-o", "JobID,State,NodeList", "--parsable2", "-j", "7", "-j", "2"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    assert out.splitlines()[0] == "JobID|State|NodeList"
    info = SlurmInfoWatcher().read_info(out)  # submitit's own parser
    assert info["7_0"]["State"] == "COMPLETED" and info["7_1"]["State"] == "RUNNING"
    assert info["7_2"]["State"] == info["7_3"]["State"] == "PENDING"
    assert info["2_0"]["State"] == "FAILED"
    assert "5" not in info  # not asked for
