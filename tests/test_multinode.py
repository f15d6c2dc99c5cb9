"""Multi-node pre-training launches, rehearsed on one host with gloo: two `torchrun` node processes
(--nnodes 2, rendezvous on 127.0.0.1) and the README's MPI-style `srun` launch (2 tasks, RANK / LOCAL_RANK /
WORLD_SIZE from SLURM's variables) through the live single-node SLURM of tests/slurm. Both must end with
the model of a single-node `torchrun --nproc-per-node 2` run, bitwise, and with the ranks in sync. What this
does not test: several physical hosts, NCCL, GPUs (README, "Multi-node pre-training")."""

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_pretrain import corpus, tiny_hparams  # noqa: F401 - corpus: the session fixture
from test_slurm import cluster  # noqa: F401 - the live single-node SLURM (skips where it cannot start)

pytestmark = pytest.mark.slow
TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pretrain_args(corpus_dir, out: Path, hp: dict) -> list[str]:
    return ["-m", "plus.cli", "pretrain", "--corpus", str(corpus_dir), "--seed", "0", "--hparams", json.dumps(hp),
            "--state-dir", str(out / "state"), "--out-model", str(out / "model.pt"),
            "--out-metrics", str(out / "metrics.json"), "--out-curve", str(out / "curve.csv")]


def same_tensors(a: Path, b: Path) -> bool:
    x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def single_node(corpus, tmp_path_factory):  # noqa: F811 - the imported fixture
    """Reference: one node, two processes (`torchrun --standalone --nproc-per-node 2`)."""
    out = tmp_path_factory.mktemp("single_node")
    hp = tiny_hparams(max_steps=12)
    res = subprocess.run([TORCHRUN, "--standalone", "--nproc-per-node", "2", *pretrain_args(corpus, out, hp)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, hp


def test_multinode_two_torchrun_nodes_give_the_single_node_model(corpus, single_node, tmp_path):  # noqa: F811
    ref, hp = single_node
    port = free_port()
    nodes = []
    for rank in (0, 1):  # each node writes only what its global rank 0 writes: node 1 gets its own dirs
        out = tmp_path / f"node{rank}"
        cmd = [TORCHRUN, "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
               "--master-addr", "127.0.0.1", "--master-port", str(port), *pretrain_args(corpus, out, hp)]
        nodes.append(subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True))
    errs = [p.communicate(timeout=600)[1] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(e[-2000:] for e in errs)
    metrics = json.loads((tmp_path / "node0/metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True  # identical parameters on both
    assert not (tmp_path / "node1/model.pt").exists()  # only global rank 0 writes
    assert same_tensors(tmp_path / "node0/model.pt", ref / "model.pt")


def test_multinode_srun_mpi_style_launch_gives_the_single_node_model(cluster, corpus, single_node,  # noqa: F811
                                                                       tmp_path):
    """The README's launch line, as the rule would run it inside an allocation of 2 tasks."""
    _, env = cluster
    ref, hp = single_node
    out = tmp_path / "srun"
    inner = ("RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS "
             "MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -1) MASTER_PORT=" + str(free_port())
             + " " + shlex.join([sys.executable, *pretrain_args(corpus, out, hp)]))
    cmd = ["srun", "--ntasks", "2", "--cpus-per-task", "1", "--mem", "3000", "--time", "10",
           "bash", "-c", inner]
    res = subprocess.run(cmd, env={**env, "PYTHONPATH": os.pathsep.join(sys.path)}, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True
    assert same_tensors(out / "model.pt", ref / "model.pt")
