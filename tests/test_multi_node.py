"""Two "machines" on this one: ``recipes/accelerate/multi_node.yaml`` launched once per machine rank on localhost
(one CPU process each, gloo), as the docs tell users to launch it on real machines.

- a clean run matches 2 processes on one machine (``cpu_ddp.yaml``): losses, evaluations, weights and metrics;
- it writes one output folder, once: only machine 0 writes (machine 1 adds only its own random state to each
  checkpoint);
- a machine killed mid-run (its launcher and every process under it, as when the machine dies): the other stops
  in bounded time with a message naming the lost rank and the resume command; ``--resume`` on both machines then
  ends with the uninterrupted run's weights and metrics;
- a machine whose worker hangs (SIGSTOP) is noticed once ``--ddp-timeout`` (30 s here) has passed, with the same
  kind of message.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from launch_helpers import (
    ACCELERATE,
    REPO,
    assert_same_history,
    history,
    launch_ddp,
    make_tiny_assets,
    max_weight_diff,
    offline_env,
    read_json,
    tiny_args,
)

from hf_transfer import run_folder
from hf_transfer.training.lost_peers import CHECK_IN_S

MULTI_NODE = str(REPO / "recipes" / "accelerate" / "multi_node.yaml")
FINETUNE = str(REPO / "recipes" / "finetune.py")
# 24 images, 2 x 4 per step: 3 steps per epoch, 6 in all; evaluation and a checkpoint every 2 steps, so a machine
# lost when checkpoint-2 appears leaves steps 3-6 to do after --resume.
RUN = {"strategy": "full", "per_device_train_batch_size": 4, "eval_strategy": "steps", "eval_steps": 2}
DDP_TIMEOUT = 30
START_S = 600  # generous bounds for a loaded 2-core machine: launch to first checkpoint, and a whole run
LOSS_NOTICED_S = 120  # a killed peer: gloo's connection reset takes seconds; add the check-in wait and the exit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Machines:
    """One ``accelerate launch --config_file multi_node.yaml`` per machine rank, started at once; only the rank, the
    IP and port, and the process count (16 in the file: machines x GPUs) differ from the recipe's own command."""

    def __init__(self, root: Path, args: list[str]):
        self.root, port, self.started = root, _free_port(), time.monotonic()
        self.procs: list[subprocess.Popen] = []
        for rank in (0, 1):
            (root / f"cwd{rank}").mkdir(parents=True)
            cmd = [ACCELERATE, "launch", "--config_file", MULTI_NODE, "--num_processes", "2", "--machine_rank",
                   str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), FINETUNE, *args]
            with open(root / f"rank{rank}.out", "w") as out, open(root / f"rank{rank}.err", "w") as err:
                self.procs.append(subprocess.Popen(cmd, cwd=root / f"cwd{rank}", stdout=out, stderr=err,
                                                   env=offline_env(root.parent / "cache", ACCELERATE_USE_CPU="true")))

    def output(self, rank: int, stream: str = "err") -> str:
        return (self.root / f"rank{rank}.{stream}").read_text()

    def wait(self, rank: int, timeout: float) -> int:
        try:
            return self.procs[rank].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"machine {rank} still running after {timeout:.0f} s:\n{self.output(rank)[-3000:]}") from None

    def check_running(self) -> None:
        """Fail with the launchers' output if either has ended, or START_S has passed since the launch."""
        ended = [r for r, p in enumerate(self.procs) if p.poll() is not None]
        if ended or time.monotonic() > self.started + START_S:
            raise AssertionError(f"machines ended: {ended} (or {START_S} s passed) before the loss\n"
                                 f"{self.output(0)[-3000:]}\n{self.output(1)[-3000:]}")

    def workers(self, rank: int) -> list[psutil.Process]:
        return [p for p in psutil.Process(self.procs[rank].pid).children(recursive=True) if FINETUNE in p.cmdline()]

    def kill(self, rank: int) -> None:
        """The machine dies: its launcher and everything under it (torch's agent gives each worker its own group)."""
        if self.procs[rank].poll() is not None:  # ended (and reaped: its pid may be another process's by now)
            return
        try:
            launcher = psutil.Process(self.procs[rank].pid)
            tree = [*launcher.children(recursive=True), launcher]
        except psutil.NoSuchProcess:
            return
        for process in tree:
            try:
                process.resume()  # a stopped process takes SIGKILL too; SIGCONT first leaves nothing half-stopped
                process.kill()
            except psutil.NoSuchProcess:
                pass
        self.procs[rank].wait(timeout=60)

    def close(self) -> None:
        for rank in (0, 1):
            self.kill(rank)


def _launch_both(root: Path, args: list[str]) -> Machines:
    machines = Machines(root, args)
    try:
        for rank in (0, 1):
            assert machines.wait(rank, START_S) == 0, machines.output(rank)[-5000:]
    finally:
        machines.close()
    return machines


def _assert_same_result(a: Path, b: Path, *, tol: float) -> None:
    assert_same_history(history(a), history(b), rtol=tol)
    assert max_weight_diff(a / "model.safetensors", b / "model.safetensors") < tol
    m_a, m_b = read_json(a / "metrics.json"), read_json(b / "metrics.json")
    assert m_a["confusion_matrix"] == m_b["confusion_matrix"] and m_a["num_samples"] == m_b["num_samples"]
    assert m_a["eval_loss"] == pytest.approx(m_b["eval_loss"], rel=tol)


def _assert_names_the_loss(message: str, *, lost: int, survivor: int, out: Path) -> None:
    line = next((ln for ln in message.splitlines() if "LostProcessError:" in ln), None)
    assert line, f"no LostProcessError in the survivor's output:\n{message[-5000:]}"
    assert f"lost rank {lost} (machine {lost})" in line and f"Rank {survivor} stopped too" in line
    assert f"{out / run_folder.CHECKPOINTS_DIR}/checkpoint-" in line  # the checkpoint kept
    assert "same command on every machine again with --resume" in line and line.endswith(" --resume")
    assert FINETUNE in line


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_node")
    model, data = make_tiny_assets(root)
    return root, tiny_args(model, data, **RUN)


@pytest.fixture(scope="module")
def clean_runs(assets):
    """The same run on 2 processes of one machine and on 2 "machines"; returns (one machine, two machines)."""
    root, args = assets
    (root / "one_cwd").mkdir()
    launch_ddp(FINETUNE, [*args, "--output-dir", str(root / "one_machine")], env=offline_env(root / "cache"),
               cwd=root / "one_cwd", timeout=START_S)
    machines = _launch_both(root / "two", [*args, "--output-dir", str(root / "two_machines")])
    return root / "one_machine", root / "two_machines", machines


def test_two_machines_match_two_processes_on_one_machine(clean_runs):
    one, two, _ = clean_runs
    assert read_json(two / "training_summary.json")["hyperparameters"]["world_size"] == 2
    assert read_json(two / "training_summary.json")["global_step"] == 6
    _assert_same_result(two, one, tol=1e-6)  # the same gloo all-reduce of the same two halves of each batch


def test_two_machines_write_one_output_folder_once(clean_runs):
    one, two, machines = clean_runs
    assert {p.name for p in two.iterdir()} == {p.name for p in one.iterdir()}
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["checkpoint-4", "checkpoint-6"]
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in (two / "checkpoints" / "checkpoint-6").iterdir()}
    assert machines.output(0, "out").count(f"saved to {two}") == 1
    assert "saved to" not in machines.output(1, "out") and "accuracy" not in machines.output(1, "out")
    assert not any((machines.root / "cwd0").iterdir()) and not any((machines.root / "cwd1").iterdir())


@dataclass
class Loss:
    """A clean run on two machines that loses ``victim`` once checkpoint-2 appears: killed with every process under
    its launcher, or (``hang``) its worker stopped with SIGSTOP, alive and connected but never answering."""

    machines: Machines
    out: Path
    victim: int
    hang: bool
    lost_at: float = 0.0
    noticed_s: float = 0.0  # from the loss to the survivor's launcher ending

    @property
    def survivor(self) -> int:
        return 1 - self.victim

    @property
    def bound_s(self) -> float:
        return DDP_TIMEOUT + CHECK_IN_S + 90 if self.hang else LOSS_NOTICED_S

    def advance(self) -> bool:
        """One look: lose the victim when its time has come; True once the survivor has ended."""
        if not self.lost_at:
            if (self.out / run_folder.CHECKPOINTS_DIR / "checkpoint-2").exists():
                self._lose()
            else:
                self.machines.check_running()
            return False
        if self.machines.procs[self.survivor].poll() is None:
            if time.monotonic() - self.lost_at > self.bound_s:
                raise AssertionError(f"machine {self.survivor} still running {self.bound_s} s after the loss:\n"
                                     f"{self.machines.output(self.survivor)[-3000:]}")
            return False
        self.noticed_s = time.monotonic() - self.lost_at
        return True

    def _lose(self) -> None:
        if self.hang:
            workers = self.machines.workers(self.victim)
            assert len(workers) == 1, workers
            workers[0].suspend()
        else:
            self.machines.kill(self.victim)
        self.lost_at = time.monotonic()


@pytest.fixture(scope="module")
def losses(assets):
    """Machine 1 killed in one run and machine 0 hung in another (--ddp-timeout 30), both runs at once: the hung
    one spends most of its time waiting. Returns {"killed": Loss, "hung": Loss} once both survivors have ended."""
    root, args = assets
    found = {}
    try:
        for name, victim, extra in (("killed", 1, []), ("hung", 0, ["--ddp-timeout", str(DDP_TIMEOUT)])):
            out = root / name
            found[name] = Loss(Machines(root / f"{name}_launch", [*args, "--output-dir", str(out), *extra]), out,
                               victim, hang=bool(extra))
        waiting = set(found)
        while waiting:
            waiting -= {name for name in waiting if found[name].advance()}
            time.sleep(0.05)
    finally:
        for loss in found.values():
            loss.machines.close()  # SIGCONT + SIGKILL on whatever is left, the stopped worker included
    for name, loss in found.items():
        print(f"{name}: machine {loss.victim} lost, machine {loss.survivor} stopped {loss.noticed_s:.1f} s later")
    return found


@pytest.mark.slow  # two more two-machine runs and a resume (~1.5 min)
def test_a_killed_machine_is_named_and_both_resume_to_the_uninterrupted_run(assets, clean_runs, losses):
    root, args = assets
    loss = losses["killed"]
    assert loss.machines.procs[0].returncode != 0
    _assert_names_the_loss(loss.machines.output(0), lost=1, survivor=0, out=loss.out)
    assert "its connection closed" in loss.machines.output(0)
    assert not (loss.out / run_folder.METRICS_FILE).exists()  # lost mid-run

    _launch_both(root / "resume", [*args, "--output-dir", str(loss.out), "--resume"])
    _assert_same_result(loss.out, clean_runs[1], tol=1e-6)  # the tolerance of tests/test_resume.py


@pytest.mark.slow  # waits out --ddp-timeout, beside the killed run
def test_a_hung_machine_is_noticed_within_the_ddp_timeout(losses):
    loss = losses["hung"]
    message = loss.machines.output(1)
    assert loss.machines.procs[1].returncode != 0
    _assert_names_the_loss(message, lost=0, survivor=1, out=loss.out)
    assert f"did not answer within --ddp-timeout ({DDP_TIMEOUT} s)" in message
    # Noticed by gloo's timeout (the run's, not torch's 30 minutes), then the survivors' check-in on the store.
    assert DDP_TIMEOUT < loss.noticed_s < loss.bound_s


def test_ddp_timeout_is_a_run_option_passed_to_the_trainer(tmp_path):
    from hf_transfer.config import parse_run_config
    from hf_transfer.training.arguments import build_training_arguments
    from hf_transfer.training.strategies import get_strategy

    run = parse_run_config(["--model", "m", "--data", "d", "--output-dir", str(tmp_path), "--ddp-timeout", "45"])
    assert run.train.ddp_timeout == 45
    assert parse_run_config(["--model", "m", "--data", "d", "--output-dir", "o"]).train.ddp_timeout == 1800
    args = build_training_arguments(run, tmp_path, strategy=get_strategy("linear"))
    assert args.ddp_timeout == 45


def test_the_ranks_that_do_not_check_in_are_the_lost_ones(monkeypatch):
    """missing_ranks on a real TCPStore: the ranks without a check-in are named; a store that is gone gives None."""
    import torch.distributed as dist

    from hf_transfer.training.lost_peers import missing_ranks

    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port), "WORLD_SIZE": "4",
                       "RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    store.set("hf_transfer/still_here/2", "1")  # rank 2 is a survivor too
    started = time.monotonic()
    assert missing_ranks(wait_s=1.0) == [1, 3]
    assert time.monotonic() - started < 30
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))  # nothing listens there: machine 0 is gone
    assert missing_ranks(wait_s=1.0) is None


def test_only_communication_failures_are_taken_for_a_lost_peer():
    import torch.distributed as dist

    from hf_transfer.training.lost_peers import is_peer_failure

    assert is_peer_failure(RuntimeError("[gloo/transport/tcp/pair.cc:545] Read error: Connection reset by peer"))
    assert is_peer_failure(RuntimeError("Application timeout caused pair closure"))
    assert is_peer_failure(dist.DistNetworkError("store unreachable"))
    assert not is_peer_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 6x2)"))
    assert not is_peer_failure(ValueError("bad label"))
