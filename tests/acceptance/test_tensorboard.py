"""TensorBoard 1.15 on the kernel's logs, opened from the host."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from tests.kernels import execute, running_kernel

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]


def test_tensorboard_is_reachable_from_the_host(tf1_kernel: str, tmp_path: Path) -> None:
    with running_kernel(tf1_kernel, str(tmp_path)) as (manager, client):
        execute(client, """
import tensorflow as tf
writer = tf.summary.FileWriter("logs/run1")
for step in range(3):
    writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag="loss", simple_value=1.0 / (step + 1))]), step)
writer.close()
""")
        result = execute(client, "%tensorboard_tf1 --logdir logs")
        assert result.status == "ok", result
        url = re.search(r"TensorBoard is serving --logdir logs at (http://127\.0\.0\.1:\d+/)", result.stdout).group(1)
        assert url == manager.provisioner.container.tensorboard_url

        page = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "tf-tensorboard" in page
        tags = json.loads(urllib.request.urlopen(url + "data/plugin/scalars/tags", timeout=10).read())
        assert "loss" in tags["run1"]
        scalars = json.loads(urllib.request.urlopen(url + "data/plugin/scalars/scalars?run=run1&tag=loss",
                                                    timeout=10).read())
        assert [round(value, 3) for _, step, value in scalars] == [1.0, 0.5, 0.333]
