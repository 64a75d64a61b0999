"""LocalSwarm's per-node options (node_args, wrap, sites): the command lines it would run."""

from __future__ import annotations

from swarm.lab.launch import LocalSwarm, Site


def test_node_args_wrap_and_given_sites_shape_each_sl_command_line(tmp_path):
    sites = [Site("bench", i, tmp_path / "one-ca") for i in (1, 2)]
    swarm = LocalSwarm(tmp_path / "run", 2, ["python", "train.py"], sites=sites,
                       sl_args=["--host-ip", "127.0.0.1"],
                       node_args=lambda i: ["--host-ip", f"10.77.0.{10 + i}"],
                       wrap=lambda i, argv: ["ip", "netns", "exec", f"ns-{i}", *argv])
    sn, *sls = swarm.commands()
    assert str(sites[0].cert("sn")) in sn
    for i, argv in enumerate(sls):
        assert argv[:4] == ["ip", "netns", "exec", f"ns-{i}"]
        assert str(sites[i].cert("sl")) in argv
        # node_args come after sl_args: argparse keeps the last --host-ip
        hosts = [argv[k + 1] for k, a in enumerate(argv) if a == "--host-ip"]
        assert hosts[-1] == f"10.77.0.{10 + i}"


def test_without_the_options_the_command_lines_are_unchanged(tmp_path):
    swarm = LocalSwarm(tmp_path / "run", 2, ["python", "train.py"])
    _, *sls = swarm.commands()
    for i, argv in enumerate(sls):
        assert "netns" not in argv
        assert str(tmp_path / "run" / "workspace" / f"site-{i + 1}" / "cert") in " ".join(argv)
